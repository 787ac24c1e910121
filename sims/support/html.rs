//! An HTML page's structure, for snapshots that must not follow pixels:
//! its elements (tag, `id`, `class`) nested by depth, and its text, without
//! any coordinate or style attribute.

/// One line per element (`tag#id.class`) and per text run, indented by
/// depth. Attributes other than `id` and `class` are dropped, so moving a
/// line by a pixel changes nothing here; adding a panel, a fault band, a
/// label or a violation does.
pub fn html_structure(html: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        push_text(&mut out, depth, &rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let tag = &rest[open + 1..open + close];
        rest = &rest[open + close + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            depth = depth.saturating_sub(1);
            let _ = name;
            continue;
        }
        let self_closing = tag.ends_with('/') || is_void(tag);
        out.push_str(&"  ".repeat(depth));
        out.push_str(&element(tag.trim_end_matches('/')));
        out.push('\n');
        if !self_closing {
            depth += 1;
        }
    }
    out
}

fn push_text(out: &mut String, depth: usize, text: &str) {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if !text.is_empty() {
        out.push_str(&"  ".repeat(depth));
        out.push_str("| ");
        out.push_str(&text);
        out.push('\n');
    }
}

/// `tag#id.class` of an opening tag's text.
fn element(tag: &str) -> String {
    let name = tag.split_whitespace().next().unwrap_or("");
    let mut s = name.to_owned();
    for (attr, mark) in [("id", "#"), ("class", ".")] {
        if let Some(v) = attribute(tag, attr) {
            s.push_str(mark);
            s.push_str(&v.replace(' ', "."));
        }
    }
    s
}

/// The value of `name="…"` in a tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')?;
    Some(tag[start..start + end].to_owned())
}

fn is_void(tag: &str) -> bool {
    let name = tag.split_whitespace().next().unwrap_or("");
    matches!(name, "meta" | "br" | "hr" | "img" | "input" | "link")
}

#[test]
fn structure_keeps_elements_and_text_and_drops_coordinates() {
    let page = "<!DOCTYPE html><div id=\"a\" class=\"b c\"><p>hi <b>there</b></p><rect x=\"1\" y=\"2\"/><meta charset=\"x\"></div>";
    assert_eq!(
        html_structure(page),
        "div#a.b.c\n  p\n    | hi\n    b\n      | there\n  rect\n  meta\n"
    );
}
