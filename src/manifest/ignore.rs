//! `.careplaneignore`: paths under a manifest directory that careplane does not read, in
//! a subset of `.gitignore` syntax. One pattern per line; `#` starts a comment line; `*`
//! matches within a path segment, `?` one character, `**` any number of segments; a
//! pattern with a `/` (other than a trailing one) is relative to the manifest directory,
//! one without matches at any depth; a trailing `/` matches directories only; `!` re-includes
//! what an earlier pattern excluded. The last matching pattern decides.

use regex::Regex;

/// The file's name, directly in the manifest directory.
pub const FILE: &str = ".careplaneignore";
/// The most of it careplane reads.
pub const MAX_BYTES: u64 = 64 * 1024;

#[derive(Debug)]
struct Rule {
    re: Regex,
    dir_only: bool,
    negate: bool,
}

/// The parsed patterns.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

fn glob_to_regex(glob: &str) -> String {
    let mut re = String::new();
    let chars: Vec<char> = glob.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    re.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    re.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re
}

impl Ignore {
    /// Parse the file's text; `Err` names the line of a pattern that cannot be used.
    pub fn parse(text: &str) -> Result<Ignore, (usize, String)> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, line),
            };
            let dir_only = pat.ends_with('/');
            let pat = pat.trim_end_matches('/');
            let anchored = pat.contains('/');
            let pat = pat.trim_start_matches('/');
            if pat.is_empty() {
                return Err((n + 1, format!("'{line}' names no path")));
            }
            let body = glob_to_regex(pat);
            let full = if anchored {
                format!("^{body}$")
            } else {
                format!("^(?:.*/)?{body}$")
            };
            let re = Regex::new(&full).map_err(|e| (n + 1, format!("'{line}': {e}")))?;
            rules.push(Rule {
                re,
                dir_only,
                negate,
            });
        }
        Ok(Ignore { rules })
    }

    /// Whether `rel` (a `/`-separated path relative to the manifest directory) is ignored.
    pub fn ignores(&self, rel: &str, is_dir: bool) -> bool {
        let mut ignored = false;
        for r in &self.rules {
            if (!r.dir_only || is_dir) && r.re.is_match(rel) {
                ignored = !r.negate;
            }
        }
        ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_like_patterns() {
        let ig = Ignore::parse(
            "# not careplane's\nci/\n*.tmpl.yaml\n/top.yaml\ncharts/**/values.yaml\n!keep.tmpl.yaml\n",
        )
        .unwrap();
        assert!(ig.ignores("ci", true));
        assert!(ig.ignores("a/ci", true));
        assert!(
            !ig.ignores("ci", false),
            "a trailing / matches directories only"
        );
        assert!(ig.ignores("x.tmpl.yaml", false));
        assert!(ig.ignores("deep/x.tmpl.yaml", false));
        assert!(!ig.ignores("keep.tmpl.yaml", false), "! re-includes");
        assert!(ig.ignores("top.yaml", false));
        assert!(
            !ig.ignores("sub/top.yaml", false),
            "a / anchors the pattern"
        );
        assert!(ig.ignores("charts/values.yaml", false));
        assert!(ig.ignores("charts/a/b/values.yaml", false));
        assert!(!ig.ignores("teams.yaml", false));
    }
}
