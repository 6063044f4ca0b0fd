//! Maps TOML field paths to byte spans and back, so errors found after deserialization (semantic
//! checks) can still name a line and column, and serde errors can name their field.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a path into a TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A key in a table.
    Key(String),
    /// An element of an array (or array of tables).
    Index(usize),
}

/// A path such as `service[1].listen`, built by the validator as it walks the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    /// The path of a top-level key.
    pub fn root(key: &str) -> Self {
        FieldPath(vec![Segment::Key(key.to_string())])
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_string()));
        next
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A parsed document kept only for its spans.
pub struct SpanMap<'i> {
    root: Spanned<DeTable<'i>>,
}

impl<'i> SpanMap<'i> {
    /// Parses `text`; `None` when it is not TOML at all (the deserializer reports that error).
    pub fn parse(text: &'i str) -> Option<Self> {
        DeTable::parse(text).ok().map(|root| SpanMap { root })
    }

    /// The span of the value at `path`, or of the nearest existing ancestor when the last
    /// segments are missing (a required key that is absent points at its table).
    pub fn span_of(&self, path: &FieldPath) -> Range<usize> {
        let mut best = self.root.span();
        let mut table: Option<&DeTable<'i>> = Some(self.root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'i>>]> = None;
        for segment in &path.0 {
            let next = match (segment, table, array) {
                (Segment::Key(key), Some(t), _) => t
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == key.as_str())
                    .map(|(k, v)| (k.span(), v)),
                (Segment::Index(i), _, Some(a)) => a.get(*i).map(|v| (v.span(), v)),
                _ => None,
            };
            let Some((key_span, value)) = next else {
                break;
            };
            best = match value.get_ref() {
                // Tables defined by a header have a span covering their whole body; pointing at
                // the key (the header) reads better.
                DeValue::Table(_) => key_span,
                _ => value.span(),
            };
            table = None;
            array = None;
            match value.get_ref() {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a),
                _ => {}
            }
        }
        best
    }

    /// The deepest field whose key or value contains `offset`: names the field of a serde error.
    pub fn path_at(&self, offset: usize) -> FieldPath {
        let mut path = FieldPath::default();
        walk_table(self.root.get_ref(), offset, &mut path);
        path
    }
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

// Table spans cover only their header and an array of tables spans only its first header, so
// the walk searches every branch instead of descending by containment.
fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut FieldPath) -> bool {
    for (key, value) in table.iter() {
        path.0.push(Segment::Key(key.get_ref().to_string()));
        if contains(&key.span(), offset) || walk_value(value, offset, path) {
            return true;
        }
        path.0.pop();
    }
    false
}

fn walk_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut FieldPath) -> bool {
    let inner = match value.get_ref() {
        DeValue::Table(t) => walk_table(t, offset, path),
        DeValue::Array(a) => a.iter().enumerate().any(|(i, item)| {
            path.0.push(Segment::Index(i));
            let found = walk_value(item, offset, path);
            if !found {
                path.0.pop();
            }
            found
        }),
        _ => false,
    };
    inner || contains(&value.span(), offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[meta]\nversion = 3\n\n[[service]]\nname = \"a\"\n\n[[service]]\nname = \"b\"\nlisten = \"x\"\n";

    #[test]
    fn finds_values_in_arrays_of_tables() {
        let map = SpanMap::parse(DOC).expect("valid toml");
        let span = map.span_of(&FieldPath::root("service").index(1).key("listen"));
        assert_eq!(&DOC[span], "\"x\"");
    }

    #[test]
    fn missing_key_points_at_nearest_ancestor() {
        let map = SpanMap::parse(DOC).expect("valid toml");
        let span = map.span_of(&FieldPath::root("meta").key("nothing"));
        assert_eq!(&DOC[span], "meta");
    }

    #[test]
    fn offsets_map_back_to_paths() {
        let map = SpanMap::parse(DOC).expect("valid toml");
        let offset = DOC.find("\"b\"").expect("present");
        assert_eq!(map.path_at(offset).to_string(), "service[1].name");
        let header = DOC.rfind("[[service]]").expect("present");
        assert_eq!(map.path_at(header).to_string(), "service[1]");
        assert_eq!(map.path_at(DOC.len() + 5).to_string(), "");
    }
}
