//! `send --exclude GLOB`: entries left out of a send, matched as rsync matches simple
//! patterns against an entry's name as sent (`tree/a/b.tmp`: the root's base name first).
//!
//! - `*` matches within one component, `?` one character of it, `[...]` a class, `**`
//!   anything, slashes included (globset's syntax with literal separators).
//! - A pattern without a `/` matches the last component (`*.tmp`, `.git`).
//! - A pattern with a `/` inside matches the end of the name at a component boundary
//!   (`cache/*.bin` matches `tree/x/cache/a.bin`); one starting with `/` matches from the
//!   root (`/tree/scratch`).
//! - A pattern ending in `/` matches directories only (`build/`).
//!
//! An excluded directory is not descended into.

use globset::{GlobBuilder, GlobMatcher};

/// The patterns of a send.
#[derive(Clone, Debug, Default)]
pub struct Excludes {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    glob: GlobMatcher,
    /// Matched against the whole name (a leading `/`), not its ends.
    anchored: bool,
    /// Matched against the last component only (no `/` inside).
    last_component: bool,
    /// Directories only (a trailing `/`).
    dirs_only: bool,
}

/// A pattern that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("exclude pattern {pattern:?}: {why}")]
pub struct BadPattern {
    /// The pattern.
    pub pattern: String,
    /// Why.
    pub why: String,
}

impl Excludes {
    /// The rules of `patterns`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Excludes, BadPattern> {
        let rules = patterns
            .iter()
            .map(|p| Rule::new(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Excludes { rules })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the entry sent as `name` (a directory when `is_dir`) is left out.
    pub fn excludes(&self, name: &str, is_dir: bool) -> bool {
        self.rules.iter().any(|r| r.matches(name, is_dir))
    }
}

impl Rule {
    fn new(pattern: &str) -> Result<Rule, BadPattern> {
        let bad = |why: String| BadPattern {
            pattern: pattern.to_owned(),
            why,
        };
        let (body, dirs_only) = match pattern.strip_suffix('/') {
            Some(b) => (b, true),
            None => (pattern, false),
        };
        let (body, anchored) = match body.strip_prefix('/') {
            Some(b) => (b, true),
            None => (body, false),
        };
        if body.is_empty() {
            return Err(bad("matches nothing".into()));
        }
        let glob = GlobBuilder::new(body)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| bad(e.kind().to_string()))?
            .compile_matcher();
        Ok(Rule {
            glob,
            anchored,
            last_component: !anchored && !body.contains('/'),
            dirs_only,
        })
    }

    fn matches(&self, name: &str, is_dir: bool) -> bool {
        if self.dirs_only && !is_dir {
            return false;
        }
        if self.last_component {
            let last = name.rsplit('/').next().unwrap_or(name);
            return self.glob.is_match(last);
        }
        if self.glob.is_match(name) {
            return true;
        }
        // Unanchored: any end of the name that starts a component.
        !self.anchored
            && name
                .match_indices('/')
                .any(|(i, _)| self.glob.is_match(&name[i + 1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(patterns: &[&str]) -> Excludes {
        Excludes::new(patterns).unwrap()
    }

    #[test]
    fn patterns_match_as_rsync_matches_simple_ones() {
        let e = ex(&["*.tmp"]);
        assert!(e.excludes("tree/a.tmp", false));
        assert!(e.excludes("tree/x/y/b.tmp", false));
        assert!(e.excludes("c.tmp", false), "a root too");
        assert!(!e.excludes("tree/a.tmp.keep", false));
        assert!(
            !e.excludes("tree/dir.tmp/keep", false),
            "only the last component"
        );
        // A slash inside: the end of the name, at a component boundary.
        let e = ex(&["cache/*.bin"]);
        assert!(e.excludes("tree/x/cache/a.bin", false));
        assert!(e.excludes("cache/a.bin", false));
        assert!(!e.excludes("tree/xcache/a.bin", false));
        assert!(
            !e.excludes("tree/cache/sub/a.bin", false),
            "* stays in its component"
        );
        // Anchored at the root.
        let e = ex(&["/tree/scratch"]);
        assert!(e.excludes("tree/scratch", true));
        assert!(!e.excludes("other/tree/scratch", true));
        // Directories only.
        let e = ex(&["build/"]);
        assert!(e.excludes("tree/build", true));
        assert!(!e.excludes("tree/build", false));
        // ** crosses components.
        let e = ex(&["/tree/**/core"]);
        assert!(e.excludes("tree/a/b/c/core", false));
        assert!(!e.excludes("elsewhere/a/core", false));
        // ?, classes, and none at all.
        let e = ex(&["f?.[ch]"]);
        assert!(e.excludes("t/f1.c", false) && e.excludes("t/fx.h", false));
        assert!(!e.excludes("t/f10.c", false));
        assert!(!ex(&[]).excludes("anything", true));
    }

    #[test]
    fn a_pattern_that_cannot_match_or_parse_is_refused() {
        for bad in ["/", "", "a[", "//"] {
            assert!(Excludes::new(&[bad]).is_err(), "{bad:?}");
        }
    }
}
