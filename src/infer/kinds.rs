//! Object kinds of a model's classes. Each model card maps its
//! own label names to kinds in a `[kinds]` table (`"dining table" = "table"`); labels the table
//! does not name are `other`. Scenarios compare kinds, never label strings, so a model with other
//! label names (COCO "motorcycle", Open Images "Car", a custom "行人") drives the same rules.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::area::kinds::ObjectKind;

/// The kind of each class id, from the card's `[kinds]` table (label → kind) and its labels.
/// Fails with the label names the table has but the label file lacks (a typo would otherwise
/// silently turn, say, every person into `other`).
pub fn class_kinds(
    labels: &[Arc<str>],
    table: &BTreeMap<String, ObjectKind>,
) -> Result<Vec<ObjectKind>, Vec<String>> {
    let unknown: Vec<String> = table
        .keys()
        .filter(|k| !labels.iter().any(|l| &**l == k.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    Ok(labels
        .iter()
        .map(|l| table.get(&**l).copied().unwrap_or(ObjectKind::Other))
        .collect())
}

/// A set of object kinds as a bit mask: which of a model's detections a camera keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSet(u32);

// One bit per kind: the vocabulary must stay within 32 kinds.
const _: () = assert!(ObjectKind::ALL.len() <= 32);

impl KindSet {
    /// Every kind: a model that serves all of a camera's scenarios keeps everything it finds.
    pub const ALL: KindSet = KindSet(u32::MAX);
    pub const EMPTY: KindSet = KindSet(0);

    fn bit(kind: ObjectKind) -> u32 {
        let index = ObjectKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(31);
        1 << index
    }

    pub fn insert(&mut self, kind: ObjectKind) {
        self.0 |= Self::bit(kind);
    }

    pub fn contains(self, kind: ObjectKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in declaration order (`ALL` lists every kind).
    pub fn kinds(self) -> impl Iterator<Item = ObjectKind> {
        ObjectKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl FromIterator<ObjectKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = ObjectKind>>(iter: I) -> Self {
        let mut set = KindSet::EMPTY;
        for k in iter {
            set.insert(k);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_set_holds_what_was_put_in_and_all_holds_every_kind() {
        let set: KindSet = [ObjectKind::Bicycle, ObjectKind::Water]
            .into_iter()
            .collect();
        assert!(set.contains(ObjectKind::Bicycle) && set.contains(ObjectKind::Water));
        assert!(!set.contains(ObjectKind::Person) && !set.contains(ObjectKind::Other));
        assert_eq!(set.kinds().count(), 2);
        assert!(ObjectKind::ALL.iter().all(|k| KindSet::ALL.contains(*k)));
        assert!(KindSet::EMPTY.is_empty());
    }

    #[test]
    fn unmapped_labels_are_other_and_unknown_keys_are_refused() {
        let labels: Vec<Arc<str>> = vec!["person".into(), "dining table".into(), "kite".into()];
        let mut table = BTreeMap::new();
        table.insert("person".to_owned(), ObjectKind::Person);
        table.insert("dining table".to_owned(), ObjectKind::Table);
        assert_eq!(
            class_kinds(&labels, &table).unwrap(),
            vec![ObjectKind::Person, ObjectKind::Table, ObjectKind::Other]
        );
        table.insert("persn".to_owned(), ObjectKind::Person);
        assert_eq!(class_kinds(&labels, &table).unwrap_err(), vec!["persn"]);
    }
}
