//! Reading a manifest directory without trusting it.
//!
//! Manifest directories come from pull requests, so their files are hostile input: a
//! `*.yaml` that is a symbolic link to `/dev/zero` (reads until memory runs out), a FIFO or
//! `/dev/urandom` (never ends), or a link to a runner secret outside the directory (whose
//! text an error message would quote into a CI log). The rules:
//!
//! - A manifest is a **regular file inside DIR**. Entries are examined without following
//!   links (`DirEntry::file_type`); FIFOs, sockets and devices named `*.yaml`/`*.yml` are
//!   refused without being opened (opening a FIFO blocks).
//! - A symbolic link to a file is followed only when its canonical target is a regular file
//!   inside the canonical DIR. A link that leaves DIR, dangles or loops is refused. Linked
//!   directories are never walked (their files would be read twice, or from outside DIR).
//! - Files are read through a bounded reader (`take(cap + 1)`), and the opened handle's own
//!   metadata is checked again (regular file, same device and inode as the one examined),
//!   so a file swapped between the check and the open is refused rather than read.
//! - The walk is bounded: file size ([`MAX_BYTES_ENV`], default 8 MiB), number of manifest
//!   files, number of directory entries looked at, and directory depth.
//!
//! Every refusal is a [`Diagnostic`] at the entry's path (line 1, column 1), all of them
//! collected before loading stops. Nothing of a refused file's content is ever read, so
//! no error can quote it.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Diagnostic, LoadError};
use crate::model::Source;

/// Environment variable overriding the per-file size cap (bytes, or with a `KiB`/`MiB`/
/// `GiB` suffix).
pub const MAX_BYTES_ENV: &str = "CAREPLANE_MAX_MANIFEST_BYTES";
/// The default per-file size cap: 8 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// How much of a manifest directory careplane reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest manifest file, in bytes.
    pub max_file_bytes: u64,
    /// Most `*.yaml`/`*.yml` files.
    pub max_files: usize,
    /// Most directory entries looked at (manifests or not, hidden ones included).
    pub max_entries: usize,
    /// Deepest directory nesting below DIR.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_files: 10_000,
            max_entries: 100_000,
            max_depth: 32,
        }
    }
}

impl Limits {
    /// The defaults, with the size cap from [`MAX_BYTES_ENV`] when it is set.
    pub fn from_env() -> Result<Self, LoadError> {
        let mut limits = Limits::default();
        if let Ok(v) = std::env::var(MAX_BYTES_ENV) {
            limits.max_file_bytes = parse_size(&v).ok_or(LoadError::Limit {
                name: MAX_BYTES_ENV,
                value: v,
            })?;
        }
        Ok(limits)
    }
}

/// `8388608`, `8MiB`, `512 KiB`, `1G` → bytes (binary units); `None` if not a positive size.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit).filter(|b| *b > 0)
}

/// The manifest files read (relative path → text) and every entry refused.
#[derive(Debug, Default)]
pub struct DirContents {
    pub files: BTreeMap<String, String>,
    pub problems: Vec<Diagnostic>,
}

fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

struct Walk<'a> {
    root: &'a Path,
    canonical_root: PathBuf,
    limits: &'a Limits,
    entries: usize,
    /// (relative path, path to open, metadata examined before opening)
    found: Vec<(String, PathBuf, Metadata)>,
    problems: Vec<Diagnostic>,
    stopped: bool,
    /// `.careplaneignore`'s patterns (none when there is no such file).
    ignore: super::ignore::Ignore,
}

impl Walk<'_> {
    fn problem(&mut self, rel: &str, message: String, help: &str) {
        self.problems.push(Diagnostic {
            source: Source {
                file: rel.to_owned(),
                line: 1,
                col: 1,
            },
            message,
            help: Some(help.to_owned()),
        });
    }

    fn dir(&mut self, dir: &Path, rel_dir: &str, depth: usize) -> Result<(), LoadError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(source) if depth == 0 => {
                return Err(LoadError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
            Err(e) => {
                self.problem(
                    rel_dir,
                    format!("cannot read this directory: {e}"),
                    "make it readable, or move it out of the manifest directory",
                );
                return Ok(());
            }
        };
        let mut list = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => list.push(e),
                Err(e) => {
                    self.problem(
                        if rel_dir.is_empty() { "." } else { rel_dir },
                        format!("cannot list this directory: {e}"),
                        "make it readable, or move it out of the manifest directory",
                    );
                    return Ok(());
                }
            }
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                self.problem(
                    if rel_dir.is_empty() { "." } else { rel_dir },
                    format!(
                        "the manifest directory has more than {} entries; careplane stopped reading here",
                        self.limits.max_entries
                    ),
                    "point careplane at a directory that holds the manifests only",
                );
                self.stopped = true;
                return Ok(());
            }
        }
        list.sort_by_key(|e| e.file_name());
        for entry in list {
            if self.stopped {
                return Ok(());
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = if rel_dir.is_empty() {
                name.clone()
            } else {
                format!("{rel_dir}/{name}")
            };
            // never follows a link
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) => {
                    self.problem(&rel, format!("cannot examine this entry: {e}"), "remove it");
                    continue;
                }
            };
            if self.ignore.ignores(&rel, file_type.is_dir()) {
                continue;
            }
            let path = entry.path();
            if file_type.is_dir() {
                if depth + 1 > self.limits.max_depth {
                    self.problem(
                        &rel,
                        format!(
                            "directory nested more than {} levels below the manifest directory",
                            self.limits.max_depth
                        ),
                        "flatten the directory tree",
                    );
                    continue;
                }
                self.dir(&path, &rel, depth + 1)?;
            } else if file_type.is_symlink() {
                self.link(&path, &rel, is_manifest_name(&name));
            } else if !is_manifest_name(&name) {
                continue;
            } else if file_type.is_file() {
                match entry.metadata() {
                    Ok(m) => self.add(rel, path, m),
                    Err(e) => {
                        self.problem(&rel, format!("cannot examine this file: {e}"), "remove it")
                    }
                }
            } else {
                self.problem(
                    &rel,
                    "this entry is not a regular file (a FIFO, socket or device); it was not opened".into(),
                    "a manifest must be a regular file: remove this entry",
                );
            }
        }
        Ok(())
    }

    /// A symbolic link: followed only to a regular file inside DIR.
    fn link(&mut self, path: &Path, rel: &str, manifest_name: bool) {
        let target = std::fs::canonicalize(path);
        let inside = target
            .as_ref()
            .is_ok_and(|t| t.starts_with(&self.canonical_root));
        let meta = target.as_ref().ok().and_then(|t| std::fs::metadata(t).ok());
        if meta.as_ref().is_some_and(Metadata::is_dir) {
            self.problem(
                rel,
                if inside {
                    "this entry is a symbolic link to a directory; careplane does not follow linked directories (their files would be read twice)".into()
                } else {
                    "this entry is a symbolic link to a directory outside the manifest directory; it was not followed".into()
                },
                "copy the manifests into the manifest directory, or remove the link",
            );
            return;
        }
        if !manifest_name {
            return; // a link to something that is not a manifest: ignored like any other file
        }
        match (target, meta) {
            (Err(_), _) | (_, None) => self.problem(
                rel,
                "this entry is a symbolic link that cannot be followed (it dangles or loops)".into(),
                "fix or remove the link",
            ),
            (Ok(_), Some(_)) if !inside => self.problem(
                rel,
                "this entry is a symbolic link to a file outside the manifest directory; it was not read"
                    .into(),
                "manifests are read only from inside the manifest directory: copy the file in, or remove the link",
            ),
            (Ok(_), Some(m)) if !m.is_file() => self.problem(
                rel,
                "this entry is a symbolic link to something that is not a regular file (a FIFO, socket or device); it was not opened".into(),
                "a manifest must be a regular file: remove the link",
            ),
            (Ok(t), Some(m)) => self.add(rel.to_owned(), t, m),
        }
    }

    fn add(&mut self, rel: String, path: PathBuf, meta: Metadata) {
        if self.found.len() >= self.limits.max_files {
            self.problem(
                &rel,
                format!(
                    "more than {} manifest files; careplane stopped reading here",
                    self.limits.max_files
                ),
                "split the manifests into several directories",
            );
            self.stopped = true;
            return;
        }
        self.found.push((rel, path, meta));
    }
}

/// Read one file the walk examined: its text, or why not (message, help).
fn read_file(path: &Path, examined: &Metadata, cap: u64) -> Result<String, (String, String)> {
    let too_large = || {
        (
            format!(
                "this file is larger than {cap} bytes, the most careplane reads from one manifest file"
            ),
            format!(
                "split it into several files, or raise the limit with {MAX_BYTES_ENV} (e.g. {MAX_BYTES_ENV}=16MiB)"
            ),
        )
    };
    if examined.len() > cap {
        return Err(too_large());
    }
    // `examined` says regular file, so opening does not block; should the entry have been
    // replaced by a FIFO in between, the open could block (std cannot open with O_NONBLOCK
    // without the libc crate), but nothing would be read: the handle is checked below.
    let file = File::open(path).map_err(|e| {
        (
            format!("cannot open this file: {e}"),
            "make it readable, or remove it".to_owned(),
        )
    })?;
    let meta = file.metadata().map_err(|e| {
        (
            format!("cannot examine this file: {e}"),
            "remove it".to_owned(),
        )
    })?;
    let changed = || {
        (
            "this file changed while careplane was reading the manifests; it was not read"
                .to_owned(),
            "run careplane again on a directory nothing else is writing to".to_owned(),
        )
    };
    if !meta.is_file() {
        return Err(changed());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (meta.dev(), meta.ino()) != (examined.dev(), examined.ino()) {
            return Err(changed());
        }
    }
    let mut bytes = Vec::with_capacity(meta.len().min(cap) as usize + 1);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| {
        (
            format!("cannot read this file: {e}"),
            "make it readable, or remove it".to_owned(),
        )
    })?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        // positioned, without quoting the bytes
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        (
            format!(
                "this file is not UTF-8 text (first invalid byte on line {line}, byte {})",
                good.len() - start + 1
            ),
            "save the file as UTF-8".to_owned(),
        )
    })
}

/// `DIR/.careplaneignore`, read like a manifest: only a regular file (never through a
/// link), at most [`super::ignore::MAX_BYTES`]. A file that cannot be used is a problem at
/// its path (and ignores nothing).
fn read_ignore(root: &Path) -> (super::ignore::Ignore, Option<Diagnostic>) {
    use super::ignore::{FILE, Ignore, MAX_BYTES};
    let path = root.join(FILE);
    let problem = |line: usize, message: String, help: &str| {
        Some(Diagnostic {
            source: Source {
                file: FILE.to_owned(),
                line: line as u64,
                col: 1,
            },
            message,
            help: Some(help.to_owned()),
        })
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(_) => return (Ignore::default(), None),
    };
    if !meta.is_file() {
        return (
            Ignore::default(),
            problem(
                1,
                "this entry is not a regular file (a link, directory, FIFO or device); it was not read".into(),
                "make .careplaneignore a regular file in the manifest directory",
            ),
        );
    }
    let text = match read_file(&path, &meta, MAX_BYTES) {
        Ok(t) => t,
        Err((message, help)) => return (Ignore::default(), problem(1, message, &help)),
    };
    match Ignore::parse(&text) {
        Ok(ig) => (ig, None),
        Err((line, message)) => (
            Ignore::default(),
            problem(
                line,
                format!("cannot use this pattern: {message}"),
                "write one path pattern per line, as in .gitignore",
            ),
        ),
    }
}

/// Walk `root` and read every manifest file it may read. `Err` only when `root` itself
/// cannot be read; every problem with an entry is in [`DirContents::problems`].
pub fn read_manifest_dir(root: &Path, limits: &Limits) -> Result<DirContents, LoadError> {
    let canonical_root = root.canonicalize().map_err(|source| LoadError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let (ignore, ignore_problem) = read_ignore(root);
    let mut walk = Walk {
        root,
        canonical_root,
        limits,
        entries: 0,
        found: Vec::new(),
        problems: ignore_problem.into_iter().collect(),
        stopped: false,
        ignore,
    };
    walk.dir(walk.root, "", 0)?;
    let mut out = DirContents {
        problems: std::mem::take(&mut walk.problems),
        ..DirContents::default()
    };
    for (rel, path, meta) in std::mem::take(&mut walk.found) {
        match read_file(&path, &meta, limits.max_file_bytes) {
            Ok(text) => {
                out.files.insert(rel, text);
            }
            Err((message, help)) => out.problems.push(Diagnostic {
                source: Source {
                    file: rel,
                    line: 1,
                    col: 1,
                },
                message,
                help: Some(help),
            }),
        }
    }
    out.problems.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("8388608"), Some(8 << 20));
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size(" 512 KiB "), Some(512 << 10));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "a: 1\n").unwrap();
        }
        dir
    }

    #[test]
    fn the_walk_is_bounded_by_files_entries_and_depth() {
        let dir = tree(&["a.yaml", "b.yaml", "c.yaml", "notes.txt", ".hidden/x.yaml"]);
        let small = Limits {
            max_files: 2,
            ..Limits::default()
        };
        let r = read_manifest_dir(dir.path(), &small).unwrap();
        assert_eq!(r.files.len(), 2);
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].source.file, "c.yaml");
        assert!(r.problems[0].message.contains("more than 2 manifest files"));

        let few = Limits {
            max_entries: 3,
            ..Limits::default()
        };
        let r = read_manifest_dir(dir.path(), &few).unwrap();
        assert!(
            r.problems[0].message.contains("more than 3 entries"),
            "{r:?}"
        );

        let dir = tree(&["top.yaml", "a/b/deep.yaml"]);
        let shallow = Limits {
            max_depth: 1,
            ..Limits::default()
        };
        let r = read_manifest_dir(dir.path(), &shallow).unwrap();
        assert_eq!(r.files.keys().collect::<Vec<_>>(), ["top.yaml"]);
        assert_eq!(r.problems[0].source.file, "a/b");
        assert!(r.problems[0].message.contains("nested more than 1 levels"));

        let r = read_manifest_dir(dir.path(), &Limits::default()).unwrap();
        assert!(r.problems.is_empty());
        assert_eq!(
            r.files.keys().collect::<Vec<_>>(),
            ["a/b/deep.yaml", "top.yaml"]
        );
    }

    #[test]
    fn non_utf8_is_positioned_without_quoting_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.yaml"), b"a: 1\nb: \xff\xfe secret\n").unwrap();
        let r = read_manifest_dir(dir.path(), &Limits::default()).unwrap();
        assert!(r.files.is_empty());
        let m = &r.problems[0].message;
        assert!(m.contains("line 2, byte 4"), "{m}");
        assert!(!m.contains("secret"));
    }
}
