//! Maps between byte offsets in a TOML file and field paths (`cameras[1].unit`), so that every
//! configuration error, from serde or from validation, can name its file, line and field.

use std::ops::Range;
use toml_edit::{Document, Item, TableLike, Value};

/// One parsed TOML text kept only for locating spans.
pub struct SourceMap {
    text: String,
    doc: Option<Document<String>>,
}

impl SourceMap {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            doc: Document::parse(text.to_owned()).ok(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        (line, col)
    }

    /// Span of the value at `path` (`a.b[2].c`), or of the closest existing ancestor.
    pub fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        span_in(doc.as_table(), &parse_path(path), None)
    }

    /// The dotted path of the deepest key whose key or value contains `offset`, and the span of
    /// the whole key/value (key start to value end).
    pub fn path_at(&self, offset: usize) -> Option<(String, Range<usize>)> {
        let doc = self.doc.as_ref()?;
        let mut found = None;
        walk_table(doc.as_table(), String::new(), offset, &mut found);
        found
    }
}

fn span_in(
    node: &dyn TableLike,
    segs: &[Seg<'_>],
    best: Option<Range<usize>>,
) -> Option<Range<usize>> {
    let Some((Seg::Key(k), rest)) = segs.split_first() else {
        return best;
    };
    let Some((key, item)) = node.get_key_value(k) else {
        return best;
    };
    let best = item.span().or_else(|| key.span()).or(best);
    match (rest.split_first(), item) {
        (None, _) => best,
        (Some((Seg::Index(i), rest)), Item::ArrayOfTables(a)) => match a.get(*i) {
            Some(t) => span_in(t, rest, t.span().or(best)),
            None => best,
        },
        (Some((Seg::Index(i), _)), Item::Value(Value::Array(a))) => {
            a.get(*i).and_then(|v| v.span()).or(best)
        }
        (Some((Seg::Key(_), _)), _) => match item.as_table_like() {
            Some(t) => span_in(t, rest, best),
            None => best,
        },
        _ => best,
    }
}

fn walk_table(
    table: &dyn TableLike,
    prefix: String,
    offset: usize,
    found: &mut Option<(String, Range<usize>)>,
) {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        };
        let key_span = key.span();
        let item_span = item.span();
        let whole = match (&key_span, &item_span) {
            (Some(k), Some(v)) => Some(k.start.min(v.start)..k.end.max(v.end)),
            (Some(k), None) => Some(k.clone()),
            (None, Some(v)) => Some(v.clone()),
            _ => None,
        };
        let contains = |r: &Option<Range<usize>>| {
            r.as_ref()
                .is_some_and(|r| r.start <= offset && offset < r.end.max(r.start + 1))
        };
        if contains(&key_span) || contains(&item_span) {
            *found = Some((path.clone(), whole.clone().unwrap_or(offset..offset)));
        }
        match item {
            Item::Table(t) => walk_table(t, path, offset, found),
            Item::Value(Value::InlineTable(t)) => walk_table(t, path, offset, found),
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    walk_table(t, format!("{path}[{i}]"), offset, found);
                }
            }
            _ => {}
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}
