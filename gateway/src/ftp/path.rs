//! FTP paths as the store sees them: the root lists the account's
//! containers, the first segment names a container, the rest is a key.

use std::path::{Component, Path};

/// Where an FTP path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FtpPath {
    /// `/`: the account's containers.
    Root,
    /// `/container`.
    Container(String),
    /// `/container/a/b`: an object `a/b`, or the pseudo-directory `a/b/`.
    Entry { container: String, key: String },
}

/// Why a path names nothing the store can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPath;

impl FtpPath {
    /// Reads a path the way a chrooted FTP server does: `.` is dropped, `..`
    /// steps up but never above the root (so it can never leave the
    /// account), and names that are not UTF-8 or hold a NUL are refused.
    pub fn parse(path: &Path) -> Result<FtpPath, BadPath> {
        let mut segments: Vec<&str> = Vec::new();
        for component in path.components() {
            match component {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    segments.pop();
                }
                Component::Normal(name) => {
                    let name = name.to_str().ok_or(BadPath)?;
                    if name.contains('\0') {
                        return Err(BadPath);
                    }
                    segments.push(name);
                }
            }
        }
        Ok(match segments.split_first() {
            None => FtpPath::Root,
            Some((container, [])) => FtpPath::Container((*container).to_owned()),
            Some((container, rest)) => FtpPath::Entry {
                container: (*container).to_owned(),
                key: rest.join("/"),
            },
        })
    }

    /// The key prefix of what this path holds when it is a directory:
    /// `""` for a container, `a/b/` for `/container/a/b`.
    pub fn dir_prefix(&self) -> String {
        match self {
            FtpPath::Entry { key, .. } => format!("{key}/"),
            FtpPath::Root | FtpPath::Container(_) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<FtpPath, BadPath>) {
        assert_eq!(FtpPath::parse(Path::new(input)), expected, "{input:?}");
    }

    fn entry(container: &str, key: &str) -> Result<FtpPath, BadPath> {
        Ok(FtpPath::Entry {
            container: container.into(),
            key: key.into(),
        })
    }

    #[test]
    fn paths_map_to_containers_and_keys() {
        check("/", Ok(FtpPath::Root));
        check("", Ok(FtpPath::Root));
        check("/photos", Ok(FtpPath::Container("photos".into())));
        check("/photos/", Ok(FtpPath::Container("photos".into())));
        check("/photos/2026/a.jpg", entry("photos", "2026/a.jpg"));
        check("photos//2026/./a.jpg", entry("photos", "2026/a.jpg"));
        check("/photos/2026/../b.jpg", entry("photos", "b.jpg"));
        check("/../../etc/passwd", entry("etc", "passwd"));
        check("/photos/..", Ok(FtpPath::Root));
        check("/photos/a\0b", Err(BadPath));
    }

    #[test]
    fn directories_have_key_prefixes() {
        let parse = |text: &str| FtpPath::parse(Path::new(text)).unwrap_or(FtpPath::Root);
        assert_eq!(parse("/c").dir_prefix(), "");
        assert_eq!(parse("/c/a/b").dir_prefix(), "a/b/");
    }
}
