//! The `text/event-stream` format (Server-Sent Events, HTML Living
//! Standard §9.2): writing events, `retry:` and comments for a server, and
//! reading them back, incrementally and bounded, for a client.
//!
//! Only the format lives here: what an event means is the chunk API's
//! (`chunk_api::events`), serving a stream the backend's, reading one the
//! client's.
//!
//! Invariants: a written field never holds a line break (a value that
//! would is refused, never split: an id or name is ours, not a peer's);
//! the reader holds at most [`SSE_EVENT_BYTES_MAX`] bytes of an unfinished
//! event, so a peer that never ends one cannot make it buffer without
//! bound.

use bytes::Bytes;
use std::time::Duration;

/// Most bytes of one event (its lines up to the blank line ending it) a
/// reader holds: an upload's state is a few hundred bytes.
pub const SSE_EVENT_BYTES_MAX: usize = 64 * 1024;

/// One event as written on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` (the reader's next `Last-Event-ID`), if the event set one.
    pub id: Option<String>,
    /// `event:`; `message` when the event named none.
    pub name: String,
    /// `data:` lines joined by `\n`.
    pub data: String,
}

/// What a reader found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// An event (one with data: the standard dispatches no other).
    Event(SseEvent),
    /// `retry:`: how long the server asks a reader to wait before it
    /// reconnects.
    Retry(Duration),
    /// A comment line (a keep-alive).
    Comment,
}

/// A field value that would break the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSE {field} must not contain a line break or NUL")]
pub struct BadField {
    /// Which field.
    pub field: &'static str,
}

/// A stream that is not one a reader will hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event went past [`SSE_EVENT_BYTES_MAX`] without ending.
    #[error("an event exceeds {limit_bytes} bytes without ending")]
    EventTooLarge {
        /// The bound.
        limit_bytes: usize,
    },
}

fn single_line(field: &'static str, value: &str) -> Result<(), BadField> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(BadField { field });
    }
    Ok(())
}

/// An event: `id:`, `event:`, then one `data:` line per line of `data`,
/// then the blank line that dispatches it.
///
/// # Errors
/// [`BadField`] if `id` or `name` holds a line break or NUL.
pub fn event(id: &str, name: &str, data: &str) -> Result<Bytes, BadField> {
    single_line("id", id)?;
    single_line("event name", name)?;
    let mut out = format!("id: {id}\nevent: {name}\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    Ok(Bytes::from(out))
}

/// `retry:` in whole milliseconds.
pub fn retry(after: Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n\n", after.as_millis()))
}

/// A comment (ignored by readers; keeps proxies from closing an idle
/// stream).
///
/// # Errors
/// [`BadField`] if `text` holds a line break or NUL.
pub fn comment(text: &str) -> Result<Bytes, BadField> {
    single_line("comment", text)?;
    Ok(Bytes::from(format!(": {text}\n\n")))
}

/// Reads a stream incrementally: feed it bytes as they come
/// ([`SseReader::push`]), it returns what they completed.
#[derive(Debug, Default)]
pub struct SseReader {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The event being assembled.
    data: String,
    name: String,
    /// Bytes of the event being assembled (its lines so far).
    event_bytes: usize,
    /// The last `id:` seen (kept across events, as the standard says).
    last_id: Option<String>,
    /// Whether the previous byte was a CR (a CRLF is one line end).
    after_cr: bool,
    /// Whether the stream's start (and a BOM there) is behind us.
    started: bool,
}

impl SseReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `bytes`, returning the items they completed.
    ///
    /// # Errors
    /// [`SseError::EventTooLarge`] once an event passes
    /// [`SSE_EVENT_BYTES_MAX`]; the reader is then of no further use.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<SseItem>, SseError> {
        if !self.started && !bytes.is_empty() {
            self.started = true;
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        let mut items = Vec::new();
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            if b == b'\n' && after_cr {
                continue; // the LF of a CRLF
            }
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                if let Some(item) = self.line_ended(&line) {
                    items.push(item);
                }
                continue;
            }
            self.line.push(b);
            self.event_bytes += 1;
            if self.event_bytes > SSE_EVENT_BYTES_MAX {
                return Err(SseError::EventTooLarge {
                    limit_bytes: SSE_EVENT_BYTES_MAX,
                });
            }
        }
        Ok(items)
    }

    /// One whole line: a field, a comment, or the blank line that ends an
    /// event.
    fn line_ended(&mut self, line: &[u8]) -> Option<SseItem> {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            return self.dispatch();
        }
        self.event_bytes += 1;
        if line.starts_with(':') {
            return Some(SseItem::Comment);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.name = value.to_owned(),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                return value
                    .parse::<u64>()
                    .ok()
                    .map(|ms| SseItem::Retry(Duration::from_millis(ms)));
            }
            _ => {} // unknown fields are ignored, as the standard says
        }
        None
    }

    /// The blank line: the event assembled so far, if it has data.
    fn dispatch(&mut self) -> Option<SseItem> {
        self.event_bytes = 0;
        let name = std::mem::take(&mut self.name);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return None;
        }
        data.pop(); // the last line's '\n'
        Some(SseItem::Event(SseEvent {
            id: self.last_id.clone(),
            name: if name.is_empty() {
                "message".to_owned()
            } else {
                name
            },
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(chunks: &[&[u8]]) -> Vec<SseItem> {
        let mut reader = SseReader::new();
        chunks
            .iter()
            .flat_map(|c| reader.push(c).expect("within bounds"))
            .collect()
    }

    #[test]
    fn what_is_written_reads_back_whatever_the_cuts() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&retry(Duration::from_millis(2500)));
        stream.extend_from_slice(&event("s0-c1-r2-receiving", "received", "{\"a\":1}").unwrap());
        stream.extend_from_slice(&comment("keep-alive").unwrap());
        stream.extend_from_slice(&event("x", "two", "line one\nline two").unwrap());
        let expected = vec![
            SseItem::Retry(Duration::from_millis(2500)),
            SseItem::Event(SseEvent {
                id: Some("s0-c1-r2-receiving".into()),
                name: "received".into(),
                data: "{\"a\":1}".into(),
            }),
            SseItem::Comment,
            SseItem::Event(SseEvent {
                id: Some("x".into()),
                name: "two".into(),
                data: "line one\nline two".into(),
            }),
        ];
        assert_eq!(read_all(&[&stream]), expected);
        // Byte by byte, as a slow network would deliver it.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(read_all(&bytes), expected);
    }

    #[test]
    fn the_standards_line_ends_defaults_and_oddities_are_honoured() {
        let items = read_all(&[
            "\u{feff}data:a\r\ndata: b\r\rid: 7\nevent\ndata\n\n: c\nretry: x\nfoo: bar\ndata: z\n\n"
                .as_bytes(),
        ]);
        assert_eq!(
            items,
            vec![
                SseItem::Event(SseEvent {
                    id: None,
                    name: "message".into(),
                    data: "a\nb".into()
                }),
                SseItem::Event(SseEvent {
                    id: Some("7".into()),
                    name: "message".into(),
                    data: String::new()
                }),
                SseItem::Comment,
                SseItem::Event(SseEvent {
                    id: Some("7".into()),
                    name: "message".into(),
                    data: "z".into()
                }),
            ]
        );
    }

    #[test]
    fn fields_with_line_breaks_are_refused_and_endless_events_bounded() {
        assert_eq!(event("a\nb", "x", "d"), Err(BadField { field: "id" }));
        assert!(event("a", "x\r", "d").is_err());
        assert!(comment("a\nb").is_err());
        let mut reader = SseReader::new();
        let line = vec![b'a'; 1024];
        let mut refused = None;
        for i in 0..=SSE_EVENT_BYTES_MAX / 1024 {
            if let Err(e) = reader.push(b"data: ").and_then(|_| reader.push(&line)) {
                refused = Some((i, e));
                break;
            }
            reader.push(b"\n").expect("a line end");
        }
        let (at, e) = refused.expect("an endless event is refused");
        assert_eq!(
            e,
            SseError::EventTooLarge {
                limit_bytes: SSE_EVENT_BYTES_MAX
            }
        );
        assert!(at >= SSE_EVENT_BYTES_MAX / 1040, "refused too early: {at}");
    }
}
