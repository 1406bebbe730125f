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

#[cfg(test)]
mod tests {
    use super::*;

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
