//! Errors of reading and writing projects. Every message names the file involved.

use std::io;
use std::path::PathBuf;

/// Why a project (or one of its files) could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The file is not valid RON, or not the shape of a project. The file is left untouched.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{} was made by a newer Storyloom (format {found}); this version reads up to {supported}",
        path.display()
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// `hint` names leftovers worth looking at (a backup or an autosave), or is empty.
    #[error("no project at {}: project.ron is missing{hint}", path.display())]
    NotAProject { path: PathBuf, hint: String },
    #[error("cannot write to {}: the folder is read-only or not permitted", path.display())]
    Unwritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} could not be {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done, e.g. "read", "written", "renamed".
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a PNG made by Storyloom ({reason})", path.display())]
    NoMetadata { path: PathBuf, reason: String },
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Encode { path: PathBuf, message: String },
}

impl ProjectError {
    /// Wraps an I/O error, telling permission problems apart because they need the user to pick
    /// another folder rather than retry.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::PermissionDenied
            || source.kind() == io::ErrorKind::ReadOnlyFilesystem
        {
            ProjectError::Unwritable { path, source }
        } else {
            ProjectError::Io {
                path,
                action,
                source,
            }
        }
    }

    /// A RON error at its position in `path`.
    pub fn parse(path: impl Into<PathBuf>, err: &ron::error::SpannedError) -> Self {
        ProjectError::Parse {
            path: path.into(),
            line: err.span.start.line,
            column: err.span.start.col,
            message: err.code.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_format_message_says_what_to_do() {
        let e = ProjectError::NewerFormat {
            path: "story/project.ron".into(),
            found: 7,
            supported: 1,
        };
        assert_eq!(
            e.to_string(),
            "story/project.ron was made by a newer Storyloom (format 7); this version reads up to 1"
        );
    }

    #[test]
    fn permission_errors_become_unwritable() {
        let e = ProjectError::io(
            "x/project.ron",
            "written",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(matches!(e, ProjectError::Unwritable { .. }));
        let e = ProjectError::io("x", "read", io::Error::from(io::ErrorKind::NotFound));
        assert!(matches!(e, ProjectError::Io { action: "read", .. }));
    }
}
