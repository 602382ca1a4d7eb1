package jsonread

import (
	"strconv"
	"strings"
)

// Paths is a compiled set of JSON paths to read from a document: a tree of
// steps from the top-level value, each node holding one slot for the value
// found there. It is immutable once compiled, so one Paths serves every
// Reader of an API.
type Paths struct {
	root  *node
	slots int      // nodes with a slot: every node but the root
	paths []int    // the slot of each compiled path, in order
	names []string // the paths as given
}

// node is one step of a path: an object member or an array element.
type node struct {
	name  string // the member's name; empty for an array element
	index int    // the element's index; -1 for a member
	kids  []*node
	slot  int
	// lo and hi bound the slots of the subtree rooted here (this node's
	// own included), which are contiguous, so that a member given twice
	// can forget what its first value left.
	lo, hi int
}

// Compile builds Paths from dotted paths ("message.usage.input_tokens");
// a step of digits only indexes an array ("choices.0.finish_reason"), any
// other step names an object member. A Reader's Values are in the order of
// paths.
func Compile(paths ...string) *Paths {
	f := &Paths{root: &node{index: -1, slot: -1}, names: paths}
	leaves := make([]*node, len(paths))
	for i, p := range paths {
		n := f.root
		for step := range strings.SplitSeq(p, ".") {
			n = n.child(step)
		}
		leaves[i] = n
	}
	f.number(f.root)
	for _, n := range leaves {
		f.paths = append(f.paths, n.slot)
	}
	return f
}

// child returns the node for step below n, adding it if need be.
func (n *node) child(step string) *node {
	index := -1
	if i, err := strconv.Atoi(step); err == nil && i >= 0 && strings.Trim(step, "0123456789") == "" {
		index, step = i, ""
	}
	for _, k := range n.kids {
		if k.name == step && k.index == index {
			return k
		}
	}
	k := &node{name: step, index: index}
	n.kids = append(n.kids, k)
	return k
}

// number gives each node below n its slot in depth-first order, so that
// every subtree's slots are contiguous.
func (f *Paths) number(n *node) {
	n.lo = f.slots
	if n != f.root {
		n.slot = f.slots
		f.slots++
	}
	for _, k := range n.kids {
		f.number(k)
	}
	n.hi = f.slots
}

// member returns the child of n for the member name, or nil.
func (n *node) member(name []byte) *node {
	for _, k := range n.kids {
		if k.index < 0 && k.name == string(name) {
			return k
		}
	}
	return nil
}

// element returns the child of n for the array index, or nil.
func (n *node) element(index int) *node {
	for _, k := range n.kids {
		if k.index == index {
			return k
		}
	}
	return nil
}

// Len returns the number of compiled paths.
func (f *Paths) Len() int { return len(f.paths) }

// Strings returns the paths as they were compiled, in order. The slice is
// shared: do not change it.
func (f *Paths) Strings() []string { return f.names }
