//! The event-log file format: a sequence of [`v1::LogRecord`] messages, each
//! preceded by its encoded length as a protobuf varint (protobuf's
//! length-delimited framing).
//!
//! Payloads are stored raw and never decoded here, so malformed input records
//! can be logged and replayed like any other. Only a broken frame (truncated
//! entry, oversize length, undecodable `LogRecord`, unknown topic) is a
//! [`LogError`].

use std::io::{self, BufRead, BufReader, Read, Write};

use prost::Message;

use crate::Topic;
use crate::v1;

/// Largest accepted encoded `LogRecord`, in bytes (16 MiB, length prefix not
/// included). The reader rejects larger lengths before allocating; the writer
/// refuses to write entries it could not read back.
pub const MAX_LOG_ENTRY_LEN: usize = 16 * 1024 * 1024;

/// Longest valid varint encoding of a `u64`.
const MAX_VARINT_LEN: usize = 10;

/// One logged input record, as it would have been consumed from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Source partition number.
    pub partition: u32,
    /// Offset of the record within its partition.
    pub offset: i64,
    /// Trusted ingest (broker) time, milliseconds since the Unix epoch, UTC.
    pub ingest_time_ms: i64,
    /// Input stream of the payload.
    pub topic: Topic,
    /// The encoded `DriverLocation` / `DemandEvent`, possibly malformed.
    pub payload: Vec<u8>,
}

impl From<&LogEntry> for v1::LogRecord {
    fn from(e: &LogEntry) -> Self {
        v1::LogRecord {
            partition: e.partition,
            offset: e.offset,
            ingest_time_ms: e.ingest_time_ms,
            topic: e.topic.to_wire(),
            payload: e.payload.clone(),
        }
    }
}

/// A broken event-log frame. Every variant names the byte offset at which the
/// offending entry (its length prefix) starts. Framing cannot be resynchronised
/// after an error, so [`LogReader`] ends iteration after yielding one.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading the underlying file failed.
    #[error("I/O error reading event log at byte offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The file ends inside an entry's length prefix.
    #[error("truncated event log: entry at byte offset {offset} ends inside its length prefix")]
    TruncatedLength { offset: u64 },
    /// The file ends inside an entry's body.
    #[error(
        "truncated event log: entry at byte offset {offset} declares {len} bytes but only {available} remain"
    )]
    TruncatedEntry {
        offset: u64,
        len: usize,
        available: usize,
    },
    /// The length prefix is not a valid varint.
    #[error("corrupt event log: invalid length prefix at byte offset {offset}")]
    InvalidLength { offset: u64 },
    /// The length prefix exceeds [`MAX_LOG_ENTRY_LEN`].
    #[error(
        "corrupt event log: entry at byte offset {offset} declares {len} bytes, more than the {max} allowed"
    )]
    TooLarge { offset: u64, len: u64, max: usize },
    /// The entry body is not a valid `primetime.v1.LogRecord`.
    #[error("corrupt event log: entry at byte offset {offset} is not a valid LogRecord: {error}")]
    Decode {
        offset: u64,
        error: prost::DecodeError,
    },
    /// The entry's topic is unspecified or unknown.
    #[error("corrupt event log: entry at byte offset {offset} has unknown topic {value}")]
    UnknownTopic { offset: u64, value: i32 },
}

impl LogError {
    /// Byte offset at which the offending entry starts.
    pub fn offset(&self) -> u64 {
        match self {
            LogError::Io { offset, .. }
            | LogError::TruncatedLength { offset }
            | LogError::TruncatedEntry { offset, .. }
            | LogError::InvalidLength { offset }
            | LogError::TooLarge { offset, .. }
            | LogError::Decode { offset, .. }
            | LogError::UnknownTopic { offset, .. } => *offset,
        }
    }
}

/// Writes [`LogEntry`]s in the event-log format. Each entry is written with a
/// single `write_all`; wrap files in a [`std::io::BufWriter`] and call
/// [`LogWriter::flush`] (or flush the writer from
/// [`LogWriter::into_inner`]) when done.
#[derive(Debug)]
pub struct LogWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> LogWriter<W> {
    pub fn new(inner: W) -> Self {
        LogWriter {
            inner,
            buf: Vec::new(),
        }
    }

    /// Appends one entry. Fails with [`io::ErrorKind::InvalidInput`] if the
    /// encoded entry exceeds [`MAX_LOG_ENTRY_LEN`]; nothing is written then.
    pub fn write(&mut self, entry: &LogEntry) -> io::Result<()> {
        let record = v1::LogRecord::from(entry);
        let len = record.encoded_len();
        if len > MAX_LOG_ENTRY_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "event log entry of {len} bytes exceeds the maximum of {MAX_LOG_ENTRY_LEN}"
                ),
            ));
        }
        self.buf.clear();
        record
            .encode_length_delimited(&mut self.buf)
            .map_err(io::Error::other)?;
        self.inner.write_all(&self.buf)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// Returns the underlying writer (not flushed).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Reads [`LogEntry`]s from the event-log format. A clean end of input
/// between entries ends iteration; anything else wrong with the framing is a
/// [`LogError`], after which iteration ends.
#[derive(Debug)]
pub struct LogReader<R: Read> {
    inner: BufReader<R>,
    /// Bytes consumed so far, i.e. the offset of the next entry.
    position: u64,
    done: bool,
    /// The entry being decoded; reused, so reading costs one allocation
    /// per entry (its payload), not two.
    body: Vec<u8>,
}

impl<R: Read> LogReader<R> {
    pub fn new(inner: R) -> Self {
        LogReader {
            inner: BufReader::new(inner),
            position: 0,
            done: false,
            body: Vec::new(),
        }
    }

    /// Byte offset of the next entry to be read.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads one byte; `None` at end of input.
    fn read_byte(&mut self) -> io::Result<Option<u8>> {
        loop {
            match self.inner.fill_buf() {
                Ok([]) => return Ok(None),
                Ok(buf) => {
                    let byte = buf[0];
                    self.inner.consume(1);
                    self.position += 1;
                    return Ok(Some(byte));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the varint length prefix; `None` on a clean end of input.
    fn read_len(&mut self, start: u64) -> Result<Option<u64>, LogError> {
        let io_err = |source| LogError::Io {
            offset: start,
            source,
        };
        let mut bytes = [0u8; MAX_VARINT_LEN];
        let mut n = 0;
        loop {
            let Some(byte) = self.read_byte().map_err(io_err)? else {
                return if n == 0 {
                    Ok(None)
                } else {
                    Err(LogError::TruncatedLength { offset: start })
                };
            };
            bytes[n] = byte;
            n += 1;
            if byte < 0x80 {
                break;
            }
            if n == MAX_VARINT_LEN {
                return Err(LogError::InvalidLength { offset: start });
            }
        }
        prost::encoding::decode_varint(&mut &bytes[..n])
            .map(Some)
            .map_err(|_| LogError::InvalidLength { offset: start })
    }

    fn read_entry(&mut self) -> Result<Option<LogEntry>, LogError> {
        let start = self.position;
        let Some(len) = self.read_len(start)? else {
            return Ok(None);
        };
        let len = match usize::try_from(len) {
            Ok(len) if len <= MAX_LOG_ENTRY_LEN => len,
            _ => {
                return Err(LogError::TooLarge {
                    offset: start,
                    len,
                    max: MAX_LOG_ENTRY_LEN,
                });
            }
        };
        let body = &mut self.body;
        body.clear();
        // `len` <= 16 MiB, so it fits in a u64.
        (&mut self.inner)
            .take(len as u64)
            .read_to_end(body)
            .map_err(|source| LogError::Io {
                offset: start,
                source,
            })?;
        self.position += body.len() as u64;
        if body.len() < len {
            return Err(LogError::TruncatedEntry {
                offset: start,
                len,
                available: body.len(),
            });
        }
        let record = v1::LogRecord::decode(body.as_slice()).map_err(|error| LogError::Decode {
            offset: start,
            error,
        })?;
        let topic = Topic::from_wire(record.topic).ok_or(LogError::UnknownTopic {
            offset: start,
            value: record.topic,
        })?;
        Ok(Some(LogEntry {
            partition: record.partition,
            offset: record.offset,
            ingest_time_ms: record.ingest_time_ms,
            topic,
            payload: record.payload,
        }))
    }
}

impl<R: Read> Iterator for LogReader<R> {
    type Item = Result<LogEntry, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = self.read_entry();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result.transpose()
    }
}

impl<R: Read> std::iter::FusedIterator for LogReader<R> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};
    use primetime_core::{RawDemandEvent, RawDriverLocation, RawRecord};

    fn entries() -> Vec<LogEntry> {
        let driver = RawRecord::Driver(RawDriverLocation {
            event_id: "e-1".into(),
            driver_id: "d-1".into(),
            event_time_ms: 1_700_000_000_000,
            lat: 52.52,
            lng: 13.405,
            status: 2,
        });
        let demand = RawRecord::Demand(RawDemandEvent {
            event_id: "e-2".into(),
            rider_id: "r-1".into(),
            event_time_ms: 1_700_000_000_500,
            lat: 52.5,
            lng: 13.4,
            kind: 1,
        });
        let (t1, p1) = encode(&driver);
        let (t2, p2) = encode(&demand);
        vec![
            LogEntry {
                partition: 0,
                offset: 0,
                ingest_time_ms: 1_700_000_000_010,
                topic: t1,
                payload: p1,
            },
            LogEntry {
                partition: 3,
                offset: 17,
                ingest_time_ms: 1_700_000_000_600,
                topic: t2,
                payload: p2,
            },
            // Garbage payload: logged and read back as-is.
            LogEntry {
                partition: 1,
                offset: 5,
                ingest_time_ms: 1_700_000_001_000,
                topic: Topic::DriverLocations,
                payload: vec![0xff; 12],
            },
            // Default values and an empty payload.
            LogEntry {
                partition: 0,
                offset: 0,
                ingest_time_ms: 0,
                topic: Topic::Demand,
                payload: Vec::new(),
            },
            LogEntry {
                partition: u32::MAX,
                offset: i64::MAX,
                ingest_time_ms: -1,
                topic: Topic::DriverLocations,
                payload: vec![0; 300],
            },
        ]
    }

    fn write_all(entries: &[LogEntry]) -> Vec<u8> {
        let mut writer = LogWriter::new(Vec::new());
        for e in entries {
            writer.write(e).unwrap();
        }
        writer.flush().unwrap();
        writer.into_inner()
    }

    #[test]
    fn round_trip_including_garbage_payload() {
        let entries = entries();
        let bytes = write_all(&entries);
        let read: Vec<LogEntry> = LogReader::new(bytes.as_slice())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, entries);
        assert!(decode(read[0].topic, &read[0].payload).is_ok());
        assert!(decode(read[1].topic, &read[1].payload).is_ok());
        assert!(decode(read[2].topic, &read[2].payload).is_err());
    }

    #[test]
    fn empty_log_has_no_entries() {
        assert_eq!(LogReader::new(&[][..]).count(), 0);
    }

    #[test]
    fn truncated_entry_names_offset() {
        let entries = entries();
        let first_len = write_all(&entries[..1]).len();
        let bytes = write_all(&entries[..2]);
        // Cut the second entry in the middle of its body.
        let cut = &bytes[..bytes.len() - 3];
        let mut reader = LogReader::new(cut);
        assert_eq!(reader.next().unwrap().unwrap(), entries[0]);
        let err = reader.next().unwrap().unwrap_err();
        assert!(matches!(err, LogError::TruncatedEntry { .. }), "{err:?}");
        assert_eq!(err.offset(), first_len as u64);
        assert!(
            err.to_string()
                .contains(&format!("byte offset {first_len}")),
            "{err}"
        );
        assert!(reader.next().is_none());
    }

    #[test]
    fn truncated_length_prefix_names_offset() {
        let entries = entries();
        let mut bytes = write_all(&entries[..1]);
        let first_len = bytes.len();
        bytes.push(0x80); // a varint continuation byte, then end of input
        let mut reader = LogReader::new(bytes.as_slice());
        assert!(reader.next().unwrap().is_ok());
        let err = reader.next().unwrap().unwrap_err();
        assert!(matches!(err, LogError::TruncatedLength { .. }), "{err:?}");
        assert_eq!(err.offset(), first_len as u64);
        assert!(reader.next().is_none());
    }

    #[test]
    fn oversize_length_rejected() {
        let mut bytes = Vec::new();
        prost::encoding::encode_varint(MAX_LOG_ENTRY_LEN as u64 + 1, &mut bytes);
        let err = LogReader::new(bytes.as_slice())
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, LogError::TooLarge { offset: 0, len, .. } if len == MAX_LOG_ENTRY_LEN as u64 + 1),
            "{err:?}"
        );

        let mut bytes = Vec::new();
        prost::encoding::encode_varint(u64::MAX, &mut bytes);
        let err = LogReader::new(bytes.as_slice())
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, LogError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn invalid_varint_rejected() {
        let bytes = [0xff; 11];
        let err = LogReader::new(&bytes[..]).next().unwrap().unwrap_err();
        assert!(
            matches!(err, LogError::InvalidLength { offset: 0 }),
            "{err:?}"
        );
    }

    #[test]
    fn writer_refuses_oversize_entry() {
        let mut writer = LogWriter::new(Vec::new());
        let entry = LogEntry {
            partition: 0,
            offset: 0,
            ingest_time_ms: 0,
            topic: Topic::Demand,
            payload: vec![0; MAX_LOG_ENTRY_LEN],
        };
        let err = writer.write(&entry).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(writer.into_inner().is_empty());
    }

    #[test]
    fn undecodable_record_and_unknown_topic_are_errors() {
        // Length 2, body is an invalid tag.
        let bytes = [0x02, 0xff, 0xff];
        let err = LogReader::new(&bytes[..]).next().unwrap().unwrap_err();
        assert!(matches!(err, LogError::Decode { offset: 0, .. }), "{err:?}");

        let record = v1::LogRecord {
            topic: 9,
            ..Default::default()
        };
        let bytes = record.encode_length_delimited_to_vec();
        let err = LogReader::new(bytes.as_slice())
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                err,
                LogError::UnknownTopic {
                    offset: 0,
                    value: 9
                }
            ),
            "{err:?}"
        );
    }
}
