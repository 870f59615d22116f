//! The package as the plugin API takes it: a gzip-compressed tar (what `canvas install`
//! posts, canvas_cli `_build_package`), written with std only. Reproducible: fixed mode,
//! owner and time, entries in path order. Gzip holds stored (uncompressed) deflate blocks:
//! a package is a few kilobytes.

use std::collections::BTreeMap;

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

fn header(name: &str, size: u64, dir: bool) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], if dir { 0o755 } else { 0o644 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// A ustar archive of `files` (relative paths, each shorter than 100 bytes), with an entry
/// for each directory before its files.
pub fn tar(files: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for (path, text) in files {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let d = format!("{}/", &path[..at + i]);
            if dirs.insert(d.clone()) {
                out.extend_from_slice(&header(&d, 0, true));
            }
            at += i + 1;
        }
        out.extend_from_slice(&header(path, text.len() as u64, false));
        out.extend_from_slice(text.as_bytes());
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `data` as a gzip member of stored deflate blocks.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The package's `.tar.gz`.
pub fn tar_gz(files: &BTreeMap<String, String>) -> Vec<u8> {
    gzip(&tar(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn the_archive_lists_directories_then_files_and_ends_with_two_zero_blocks() {
        let mut files = BTreeMap::new();
        files.insert("CANVAS_MANIFEST.json".to_owned(), "{}".to_owned());
        files.insert("handlers/a.py".to_owned(), "x = 1\n".to_owned());
        let t = tar(&files);
        assert_eq!(t.len() % 512, 0);
        assert_eq!(&t[0..20], b"CANVAS_MANIFEST.json");
        assert_eq!(&t[1024..1033], b"handlers/");
        assert_eq!(t[1024 + 156], b'5');
        assert_eq!(&t[1536..1549], b"handlers/a.py");
        assert!(t[t.len() - 1024..].iter().all(|&b| b == 0));
        let gz = gzip(&t);
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(gz.len(), 10 + 5 + t.len() + 8);
    }

    /// GNU tar (as a reader independent of this writer) lists and extracts the archive.
    #[test]
    fn gnu_tar_reads_the_archive() {
        let mut files = BTreeMap::new();
        files.insert(
            "CANVAS_MANIFEST.json".to_owned(),
            "{\"name\": \"x\"}\n".to_owned(),
        );
        files.insert(
            "handlers/careplane_rules.py".to_owned(),
            "y = 2\n".repeat(20_000),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.tar.gz");
        std::fs::write(&path, tar_gz(&files)).unwrap();
        let out = dir.path().join("x");
        std::fs::create_dir(&out).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(&path)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        for (f, text) in &files {
            assert_eq!(&std::fs::read_to_string(out.join(f)).unwrap(), text, "{f}");
        }
    }
}
