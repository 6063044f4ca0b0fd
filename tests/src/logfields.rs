//! Fields of the daemons' text logs, read whole: tests judge log records by exact field
//! values, never by substrings of a line.

/// The `key=value` fields of one line of a daemon's text log (tracing's format), a quoted value
/// unquoted: fields are compared whole, so `version=10` never matches `version=106` or
/// `running_version=10`, and text inside a quoted `detail` is never taken for a field.
pub fn log_fields(line: &str) -> Vec<(&str, String)> {
    let mut fields = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        rest = &rest[start..];
        let key_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        if key_len > 0 && rest[key_len..].starts_with('=') {
            let key = &rest[..key_len];
            let value_text = &rest[key_len + 1..];
            if let Some(quoted) = value_text.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                fields.push((key, value));
                rest = &quoted[end..];
                continue;
            }
            let end = value_text
                .find(char::is_whitespace)
                .unwrap_or(value_text.len());
            fields.push((key, value_text[..end].to_string()));
            rest = &value_text[end..];
            continue;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    fields
}

/// The value of `key` in a log line's fields.
pub fn log_field<'a>(fields: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_compare_whole_values() {
        let line = r#"2026-01-01T00:00:00Z  WARN config refused event="refused" version=106 running_version=10 detail="nothing changed (running version=10) \"x\"" reason="not_newer""#;
        let fields = log_fields(line);
        assert_eq!(log_field(&fields, "event"), Some("refused"));
        assert_eq!(log_field(&fields, "version"), Some("106"));
        assert_eq!(log_field(&fields, "running_version"), Some("10"));
        assert_eq!(
            log_field(&fields, "detail"),
            Some(r#"nothing changed (running version=10) "x""#)
        );
        assert_eq!(log_field(&fields, "reason"), Some("not_newer"));
        assert_eq!(log_field(&fields, "signer"), None);
    }
}
