package sync

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Exclude rules follow rsync's syntax, the one users already have files for:
//
//	*.log        no "/": matched against the last name of each path
//	cache/       a trailing "/" matches directories only
//	/build       a leading "/" anchors the pattern at the top of SRC
//	a/*/tmp      a "/" inside (or "**"): matched against the whole path's trailing names
//	*, ?, [a-z]  do not match "/"; "**" does
//	dir/***      dir itself and everything below it
//	+ pat, - pat include / exclude rule (in files); the first matching rule wins
//
// Excluded entries are neither copied nor, at DST, deleted (rsync without
// --delete-excluded). An excluded directory is not descended into.

type rule struct {
	include  bool
	dirOnly  bool
	wholeRel bool // match against the whole relative path (else the last name)
	re       *regexp.Regexp
	text     string
}

type excluder struct{ rules []rule }

func newExcluder(patterns []string) (*excluder, error) {
	x := &excluder{}
	for _, p := range patterns {
		r, ok, err := parseRule(p)
		if err != nil {
			return nil, err
		}
		if ok {
			x.rules = append(x.rules, r)
		}
	}
	return x, nil
}

func parseRule(line string) (rule, bool, error) {
	r := rule{text: line}
	switch {
	case strings.HasPrefix(line, "+ "):
		r.include, line = true, line[2:]
	case strings.HasPrefix(line, "- "):
		line = line[2:]
	}
	if line == "" {
		return r, false, nil
	}
	anchored := strings.HasPrefix(line, "/")
	line = strings.TrimPrefix(line, "/")
	subtree := false
	if strings.HasSuffix(line, "/***") {
		subtree, line = true, strings.TrimSuffix(line, "/***")
	} else if strings.HasSuffix(line, "/") {
		r.dirOnly, line = true, strings.TrimSuffix(line, "/")
	}
	if line == "" {
		return r, false, fmt.Errorf("exclude pattern %q matches nothing", r.text)
	}
	r.wholeRel = anchored || subtree || strings.Contains(line, "/") || strings.Contains(line, "**")
	expr := globToRegexp(line)
	if subtree {
		expr += "(/.*)?"
	}
	switch {
	case anchored:
		expr = "^" + expr + "$"
	case r.wholeRel:
		expr = "(^|/)" + expr + "$"
	default:
		expr = "^" + expr + "$"
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return r, false, fmt.Errorf("exclude pattern %q: %w", r.text, err)
	}
	r.re = re
	return r, true, nil
}

// globToRegexp translates rsync wildcards into a regular expression (unanchored).
func globToRegexp(g string) string {
	var b strings.Builder
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch {
		case c == '*' && i+1 < len(g) && g[i+1] == '*':
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			end := strings.IndexByte(g[i+1:], ']')
			if end < 0 {
				b.WriteString(`\[`)
				continue
			}
			class := g[i+1 : i+1+end]
			if end == 0 { // "[]...]": a literal ] first in the class
				if e2 := strings.IndexByte(g[i+2:], ']'); e2 >= 0 {
					class = g[i+1 : i+2+e2]
					end = e2 + 1
				}
			}
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += end + 1
		case c == '\\' && i+1 < len(g):
			b.WriteString(regexp.QuoteMeta(g[i+1 : i+2]))
			i++
		default:
			b.WriteString(regexp.QuoteMeta(g[i : i+1]))
		}
	}
	return b.String()
}

// excluded tells whether rel (relative to SRC, never ".") is left out of the mirror.
func (x *excluder) excluded(rel string, isDir bool) bool {
	if x == nil {
		return false
	}
	base := rel
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		base = rel[i+1:]
	}
	for _, r := range x.rules {
		if r.dirOnly && !isDir {
			continue
		}
		subject := base
		if r.wholeRel {
			subject = rel
		}
		if r.re.MatchString(subject) {
			return !r.include
		}
	}
	return false
}

// ReadExcludeFile reads rsync exclude rules from a file, one a line: blank lines and
// lines starting with ";" or "#" are comments, "+ " and "- " prefixes are honoured.
func ReadExcludeFile(name string) ([]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if _, _, err := parseRule(line); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return out, nil
}
