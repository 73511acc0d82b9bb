//! The project document and its files on disk.
