//! hostPath `type` checks, with upstream's messages (`pkg/volume/hostpath/host_path.go`).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

/// Checks (and for the *OrCreate types creates) `path` for hostPath type `kind`; the error is upstream's message.
pub fn check(path: &Path, kind: &str) -> Result<(), String> {
    let p = path.display();
    let meta = std::fs::metadata(path).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_none() => {
            std::fs::create_dir_all(path).map_err(|e| format!("hostPath type check failed: creating {p}: {e}"))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
        }
        "FileOrCreate" if meta.is_none() => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|_| ())
            .map_err(|e| format!("hostPath type check failed: creating {p}: {e}")),
        "DirectoryOrCreate" | "Directory" if !ft.is_some_and(|f| f.is_dir()) => {
            Err(format!("hostPath type check failed: {p} is not a directory"))
        }
        "FileOrCreate" | "File" if !ft.is_some_and(|f| f.is_file()) => Err(format!("hostPath type check failed: {p} is not a file")),
        "Socket" if !ft.is_some_and(|f| f.is_socket()) => Err(format!("hostPath type check failed: {p} is not a socket file")),
        "CharDevice" if !ft.is_some_and(|f| f.is_char_device()) => {
            Err(format!("hostPath type check failed: {p} is not a character device"))
        }
        "BlockDevice" if !ft.is_some_and(|f| f.is_block_device()) => {
            Err(format!("hostPath type check failed: {p} is not a block device"))
        }
        "DirectoryOrCreate" | "Directory" | "FileOrCreate" | "File" | "Socket" | "CharDevice" | "BlockDevice" => Ok(()),
        other => Err(format!("{other} is an invalid volume type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_checked_and_created() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("made/deep");
        check(&dir, "DirectoryOrCreate").unwrap();
        assert!(dir.is_dir());
        check(&dir, "Directory").unwrap();
        let file = d.path().join("f");
        check(&file, "FileOrCreate").unwrap();
        assert!(file.is_file());
        check(&file, "File").unwrap();
        check(&file, "").unwrap();
        assert_eq!(check(&file, "Directory").unwrap_err(), format!("hostPath type check failed: {} is not a directory", file.display()));
        assert_eq!(check(&dir, "File").unwrap_err(), format!("hostPath type check failed: {} is not a file", dir.display()));
        assert!(check(&d.path().join("none"), "Directory").unwrap_err().ends_with("is not a directory"));
        assert!(check(&file, "Socket").unwrap_err().ends_with("is not a socket file"));
        assert!(check(&file, "CharDevice").unwrap_err().ends_with("is not a character device"));
        assert!(check(&file, "BlockDevice").unwrap_err().ends_with("is not a block device"));
        check(Path::new("/dev/null"), "CharDevice").unwrap();
        assert_eq!(check(&file, "Weird").unwrap_err(), "Weird is an invalid volume type");
    }
}
