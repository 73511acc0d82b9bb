//! Undo and redo as a stack of document snapshots. Consecutive edits with the same key
//! (typing into one text field) merge into one undo step.

/// What an edit touched; typing into the same field again does not add an undo step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditKey {
    /// A discrete command (add, delete, move, toggle…): always its own step.
    Command,
    /// A text or number field, named by its owner and field.
    Field(u64, &'static str),
}

#[derive(Debug, Clone)]
pub struct History<T> {
    undo: Vec<T>,
    redo: Vec<T>,
    last_key: Option<EditKey>,
    limit: usize,
}

impl<T: Clone> History<T> {
    pub fn new(limit: usize) -> Self {
        Self {
            undo: Vec::new(),
            redo: Vec::new(),
            last_key: None,
            limit: limit.max(1),
        }
    }

    /// Records the state before an edit. An edit of the same field as the previous one
    /// belongs to the same step and records nothing.
    pub fn record(&mut self, before: &T, key: EditKey) {
        let merge = key != EditKey::Command && self.last_key.as_ref() == Some(&key);
        self.last_key = Some(key);
        if merge {
            return;
        }
        self.undo.push(before.clone());
        if self.undo.len() > self.limit {
            self.undo.remove(0);
        }
        self.redo.clear();
    }

    /// Ends the current merge (e.g. when a text field loses focus).
    pub fn break_merge(&mut self) {
        self.last_key = None;
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// The state to go back to; `current` goes on the redo stack.
    pub fn undo(&mut self, current: &T) -> Option<T> {
        let previous = self.undo.pop()?;
        self.redo.push(current.clone());
        self.last_key = None;
        Some(previous)
    }

    pub fn redo(&mut self, current: &T) -> Option<T> {
        let next = self.redo.pop()?;
        self.undo.push(current.clone());
        self.last_key = None;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_redo_walk_the_snapshots() {
        let mut h = History::new(10);
        let mut doc = 0;
        for v in 1..=3 {
            h.record(&doc, EditKey::Command);
            doc = v;
        }
        doc = h.undo(&doc).unwrap();
        assert_eq!(doc, 2);
        doc = h.undo(&doc).unwrap();
        assert_eq!(doc, 1);
        doc = h.redo(&doc).unwrap();
        assert_eq!(doc, 2);
        // A new edit drops the redo branch.
        h.record(&doc, EditKey::Command);
        doc = 9;
        assert!(!h.can_redo());
        assert_eq!(h.undo(&doc), Some(2));
    }

    #[test]
    fn typing_in_one_field_is_one_step() {
        let mut h = History::new(10);
        let mut doc = String::new();
        for c in ["a", "ab", "abc"] {
            h.record(&doc, EditKey::Field(1, "action"));
            doc = c.to_string();
        }
        h.record(&doc, EditKey::Field(2, "action"));
        doc = "x".into();
        assert_eq!(h.undo(&doc).as_deref(), Some("abc"));
        assert_eq!(h.undo(&"abc".to_string()).as_deref(), Some(""));
        assert!(!h.can_undo());
    }

    #[test]
    fn the_oldest_steps_fall_off_at_the_limit() {
        let mut h = History::new(2);
        for v in 0..5 {
            h.record(&v, EditKey::Command);
        }
        assert_eq!(h.undo(&5), Some(4));
        assert_eq!(h.undo(&4), Some(3));
        assert_eq!(h.undo(&3), None);
    }
}
