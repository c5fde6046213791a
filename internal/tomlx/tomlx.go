// Package tomlx decodes TOML configuration files strictly and remembers where
// every key and value sits, so that callers can report semantic errors as
// "file:line:col: field: message".
//
// It is for small, human-written configuration files (the policy file, the
// daemon's config). Decoding rejects unknown keys and type mismatches with
// their position. After a successful Decode, the returned Document maps field
// paths such as "rule[3].allow.read[1]" to positions; validation code uses
// Document.Errorf to build located errors.
//
// It must never panic on any input, and it never reads files itself.
package tomlx

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Pos is a 1-based line and column in a document. The zero Pos means
// "unknown".
type Pos struct {
	Line, Col int
}

// Error is an error located in a TOML document. Line and Col are 1-based; zero
// means unknown. Field is the path of the offending key in the notation of
// Document.Pos ("rule[3].allow.read"), or "" when the error is not about one
// field (a syntax error).
type Error struct {
	File  string
	Line  int
	Col   int
	Field string
	Err   error
}

// Error formats the error as "file:line:col: field: message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
		if e.Col > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Col))
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Errors is a list of located errors, reported together (for example every
// unknown key of a document). It is never empty when returned as an error.
type Errors []*Error

// Error formats one error per line.
func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Unwrap returns the individual errors, for errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Err returns nil for an empty list, the single error for a list of one, and
// the list otherwise.
func (es Errors) Err() error {
	switch len(es) {
	case 0:
		return nil
	case 1:
		return es[0]
	}
	return es
}

type entry struct {
	key Pos // where the key (or table header) is written
	val Pos // where the value starts; zero for tables and arrays
}

// Document is the position index of a successfully decoded document.
// It is immutable and safe for concurrent use.
type Document struct {
	name string
	pos  map[string]entry
}

// Name returns the file name given to Decode.
func (d *Document) Name() string { return d.name }

// Has reports whether the document defines field (see Pos for the notation).
func (d *Document) Has(field string) bool {
	_, ok := d.pos[field]
	return ok
}

// Pos returns the position of field's value, or of its key when the value is
// a table or an array, or the zero Pos when the document does not define it.
//
// Fields are written as dotted paths from the document root; elements of
// arrays (including arrays of tables) are indexed from 0:
// "version", "trust.uids[2]", "rule[3]" (a [[rule]] header),
// "rule[3].allow.read[0]". Keys that contain '.', '[' or ']' cannot be
// addressed.
func (d *Document) Pos(field string) Pos {
	e, ok := d.pos[field]
	if !ok {
		return Pos{}
	}
	if e.val.Line > 0 {
		return e.val
	}
	return e.key
}

// KeyPos returns the position of field's key (or table header), or the zero
// Pos when the document does not define it.
func (d *Document) KeyPos(field string) Pos { return d.pos[field].key }

// Errorf returns an Error located at field. When the document does not define
// field, the nearest enclosing field that it defines is used for the
// position (so an error about a missing key points at its table).
func (d *Document) Errorf(field, format string, args ...any) *Error {
	return d.Wrap(field, fmt.Errorf(format, args...))
}

// Wrap returns err located at field (see Errorf).
func (d *Document) Wrap(field string, err error) *Error {
	p := d.Pos(field)
	for f := field; p.Line == 0 && f != ""; {
		f = parent(f)
		p = d.Pos(f)
	}
	return &Error{File: d.name, Line: p.Line, Col: p.Col, Field: field, Err: err}
}

// parent strips the last component of a field path: "a.b[2]" -> "a.b",
// "a.b" -> "a", "a" -> "".
func parent(f string) string {
	if strings.HasSuffix(f, "]") {
		if i := strings.LastIndexByte(f, '['); i >= 0 {
			return f[:i]
		}
	}
	if i := strings.LastIndexByte(f, '.'); i >= 0 {
		return f[:i]
	}
	return ""
}

// Decode decodes data, a TOML document named name (used in error messages),
// into v (a pointer to a struct, as for go-toml's Unmarshal) strictly: a key
// that matches no struct field is an error, as is a value of the wrong type.
//
// Errors are *Error (syntax and type errors) or Errors (every unknown key),
// always with the line and column, and the field path when there is one.
func Decode(name string, data []byte, v any) (*Document, error) {
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	derr := dec.Decode(v)

	doc, ierr := index(name, data)
	if derr != nil {
		return nil, convert(name, doc, derr)
	}
	if ierr != nil {
		// The decoder accepted what the indexing parser rejects: should not
		// happen, as both use the same parser.
		return nil, ierr
	}
	return doc, nil
}

func convert(name string, doc *Document, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		out := make(Errors, 0, len(strict.Errors))
		for i := range strict.Errors {
			e := located(name, doc, &strict.Errors[i])
			e.Err = errors.New("unknown field")
			out = append(out, e)
		}
		if len(out) > 0 {
			return out
		}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		e := located(name, doc, de)
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		e.Err = errors.New(msg)
		return e
	}
	return &Error{File: name, Err: err}
}

func located(name string, doc *Document, de *toml.DecodeError) *Error {
	line, col := de.Position()
	field := strings.Join(de.Key(), ".")
	if doc != nil {
		// Prefer the indexed path ("rule[3].foo") of the key written at
		// this position over go-toml's dotted key without indexes.
		if f, ok := doc.fieldAt(Pos{line, col}, field); ok {
			field = f
		}
	}
	return &Error{File: name, Line: line, Col: col, Field: field}
}

// fieldAt finds the indexed path of a key written at p whose unindexed form
// is plain.
func (d *Document) fieldAt(p Pos, plain string) (string, bool) {
	var found []string
	for f, e := range d.pos {
		if e.key == p || e.val == p {
			found = append(found, f)
		}
	}
	if len(found) == 0 {
		return "", false
	}
	sort.Strings(found)
	for _, f := range found {
		if stripIndexes(f) == plain {
			return f, true
		}
	}
	// Several keys at one position (a dotted key defines its parents too):
	// the longest is the most precise.
	best := found[0]
	for _, f := range found {
		if len(f) > len(best) {
			best = f
		}
	}
	return best, plain == ""
}

func stripIndexes(f string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(f); i++ {
		switch c := f[i]; {
		case c == '[':
			depth++
		case c == ']':
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// indexer builds the position index with go-toml's unstable parser.
type indexer struct {
	p     unstable.Parser
	nl    []int // offsets of '\n'
	pos   map[string]entry
	count map[string]int // array path -> elements so far
}

func index(name string, data []byte) (*Document, error) {
	ix := &indexer{pos: make(map[string]entry), count: make(map[string]int)}
	for i, c := range data {
		if c == '\n' {
			ix.nl = append(ix.nl, i)
		}
	}
	ix.p.Reset(data)
	cur := ""
	for ix.p.NextExpression() {
		e := ix.p.Expression()
		switch e.Kind {
		case unstable.Table:
			var kp Pos
			cur, kp = ix.resolve("", e.Key(), false)
			ix.set(cur, entry{key: kp})
		case unstable.ArrayTable:
			var kp Pos
			cur, kp = ix.resolve("", e.Key(), true)
			ix.set(cur, entry{key: kp})
		case unstable.KeyValue:
			ix.keyValue(cur, e)
		}
	}
	doc := &Document{name: name, pos: ix.pos}
	if err := ix.p.Error(); err != nil {
		var pe *unstable.ParserError
		if errors.As(err, &pe) {
			return doc, &Error{File: name, Err: errors.New(pe.Message)}
		}
		return doc, &Error{File: name, Err: err}
	}
	return doc, nil
}

func (ix *indexer) set(path string, e entry) {
	if _, ok := ix.pos[path]; !ok {
		ix.pos[path] = e
	}
}

// resolve turns a key relative to base into an indexed path. A key part that
// names an array of tables refers to its last element, as in TOML. When
// appendElem is true the last part is an array of tables gaining an element.
func (ix *indexer) resolve(base string, it unstable.Iterator, appendElem bool) (string, Pos) {
	path := base
	var first Pos
	for it.Next() {
		n := it.Node()
		if first.Line == 0 {
			first = ix.at(n)
		}
		if path != "" {
			path += "."
		}
		path += string(n.Data)
		if appendElem && it.IsLast() {
			i := ix.count[path]
			ix.count[path] = i + 1
			path += "[" + strconv.Itoa(i) + "]"
			continue
		}
		if c, ok := ix.count[path]; ok && c > 0 {
			path += "[" + strconv.Itoa(c-1) + "]"
		}
		if !it.IsLast() {
			// Intermediate tables are defined implicitly here.
			ix.set(path, entry{key: first})
		}
	}
	return path, first
}

func (ix *indexer) keyValue(base string, kv *unstable.Node) {
	path, kp := ix.resolve(base, kv.Key(), false)
	ix.value(path, kp, kv.Value())
}

func (ix *indexer) value(path string, kp Pos, v *unstable.Node) {
	switch v.Kind {
	case unstable.Array:
		ix.set(path, entry{key: kp})
		i := 0
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			ep := path + "[" + strconv.Itoa(i) + "]"
			i++
			p := ix.at(c)
			if p.Line == 0 {
				p = kp
			}
			ix.value(ep, p, c)
		}
	case unstable.InlineTable:
		ix.set(path, entry{key: kp, val: ix.at(v)})
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.KeyValue {
				ix.keyValue(path, c)
			}
		}
	default:
		ix.set(path, entry{key: kp, val: ix.at(v)})
	}
}

// at returns the position of a node that has a raw range, or the zero Pos.
func (ix *indexer) at(n *unstable.Node) Pos {
	if n == nil || n.Raw.Length == 0 && n.Raw.Offset == 0 {
		return Pos{}
	}
	off := int(n.Raw.Offset)
	line := sort.SearchInts(ix.nl, off) // newlines before off
	start := 0
	if line > 0 {
		start = ix.nl[line-1] + 1
	}
	return Pos{Line: line + 1, Col: off - start + 1}
}
