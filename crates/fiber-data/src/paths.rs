//! Resolving dataset-relative image paths under a root folder, refusing any path that would
//! lead outside it.

use std::path::{Component, Path, PathBuf};

/// `root/relative`, or an error when `relative` is absolute or climbs out of `root` with `..`
/// (checked on the path's components, before touching the file system).
pub(crate) fn resolve_under(root: &Path, relative: &str) -> Result<PathBuf, String> {
    let relative_path = Path::new(relative);
    let mut depth = 0usize;
    for component in relative_path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return Err(format!("`{relative}` leads outside the data folder"));
                }
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                "`{relative}` is an absolute path; image paths must be relative to the data folder"
            ))
            }
        }
    }
    if depth == 0 {
        return Err(format!("`{relative}` does not name a file"));
    }
    Ok(root.join(relative_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_root_resolve_and_escapes_are_refused() {
        let root = Path::new("data");
        assert_eq!(
            resolve_under(root, "val2014/x.jpg").unwrap(),
            Path::new("data/val2014/x.jpg")
        );
        assert_eq!(
            resolve_under(root, "a/../b.jpg").unwrap(),
            Path::new("data/a/../b.jpg")
        );
        assert!(resolve_under(root, "../secret.jpg")
            .unwrap_err()
            .contains("outside"));
        assert!(resolve_under(root, "a/../../b.jpg")
            .unwrap_err()
            .contains("outside"));
        assert!(resolve_under(root, "/etc/passwd")
            .unwrap_err()
            .contains("absolute"));
        assert!(resolve_under(root, ".").is_err());
    }
}
