//! TensorBoard event files, written by hand: no protobuf or TensorFlow dependency.
//!
//! An event file is a sequence of TFRecords:
//! `u64 length (LE) | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)`,
//! where each `data` is a serialised `tensorflow.Event` protobuf. The first record carries
//! `file_version = "brain.Event:2"`; the others carry one `Summary` of scalar values.
//!
//! The protobuf subset used here (field numbers from tensorflow/core/util/event.proto and summary.proto):
//! `Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }`,
//! `Summary { repeated Value value = 1; }`, `Value { string tag = 1; float simple_value = 2; }`.
//!
//! [`read_events`] decodes the same subset (checking both CRCs); it backs the tests and lets
//! tools read a run back without TensorBoard.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const FILE_VERSION: &str = "brain.Event:2";
const CRC_MASK_DELTA: u32 = 0xa282_ead8;

/// TFRecord's CRC masking: rotate right by 15 bits, then add a constant, so that a CRC of data
/// that itself contains CRCs is not degenerate.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(CRC_MASK_DELTA)
}

/// Writes one `events.out.tfevents.<secs>.<hostname>` file in a log directory.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates the directory if needed and a fresh event file inside it (never overwriting an
    /// existing one: a resumed run gets a second file, which TensorBoard merges by step).
    pub fn create(log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating TensorBoard log dir {}", log_dir.display()))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = format!("events.out.tfevents.{secs}.{}", hostname());
        let mut path = log_dir.join(&base);
        let mut k = 1;
        while path.exists() {
            path = log_dir.join(format!("{base}.{k}"));
            k += 1;
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating event file {}", path.display()))?;
        let mut w = EventWriter {
            out: BufWriter::new(file),
            path,
        };
        let mut ev = Vec::new();
        put_double(&mut ev, 1, wall_time());
        put_bytes(&mut ev, 3, FILE_VERSION.as_bytes());
        w.write_record(&ev)?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event holding every scalar of a step. Non-finite values are written as they are
    /// (TensorBoard shows NaN/Inf), since hiding them would hide a diverging run.
    pub fn add_scalars<S: AsRef<str>>(&mut self, step: i64, values: &[(S, f64)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, tag.as_ref().as_bytes());
            put_float(&mut value, 2, *v as f32);
            put_bytes(&mut summary, 1, &value);
        }
        let mut ev = Vec::new();
        put_double(&mut ev, 1, wall_time());
        put_varint_field(&mut ev, 2, step as u64);
        put_bytes(&mut ev, 5, &summary);
        self.write_record(&ev)
    }

    pub fn add_scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        self.add_scalars(step, &[(tag, value)])
    }

    /// Flushes to the OS; the trainer calls this once per step so a live TensorBoard sees it.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("flushing {}", self.path.display()))
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            out.write_all(&len)?;
            out.write_all(&masked_crc32c(&len).to_le_bytes())?;
            out.write_all(data)?;
            out.write_all(&masked_crc32c(data).to_le_bytes())
        };
        write(&mut self.out).with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    // Keep the file name portable.
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}

// ---- protobuf wire format (the four field kinds we need) ----

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(buf, ((field as u64) << 3) | wire_type as u64);
}

fn put_varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_key(buf, field, 0);
    put_varint(buf, v);
}

fn put_double(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_key(buf, field, 1);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_float(buf: &mut Vec<u8>, field: u32, v: f32) {
    put_key(buf, field, 5);
    buf.extend_from_slice(&v.to_le_bytes());
}

// ---- reading back ----

/// The decoded subset of a `tensorflow.Event`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    /// `(tag, simple_value)` pairs of the event's summary, in file order.
    pub scalars: Vec<(String, f32)>,
}

/// Reads every record of an event file, checking the framing and both CRCs of each record.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    let name = path.display();
    let mut events = Vec::new();
    let mut pos = 0usize;
    let mut index = 0usize;
    while pos < bytes.len() {
        let header = bytes
            .get(pos..pos + 12)
            .with_context(|| format!("{name}: record {index}: truncated header"))?;
        let len_bytes = &header[..8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(header[8..12].try_into().unwrap());
        if len_crc != masked_crc32c(len_bytes) {
            bail!("{name}: record {index}: length CRC mismatch");
        }
        let data = bytes
            .get(pos + 12..pos + 12 + len)
            .with_context(|| format!("{name}: record {index}: truncated data"))?;
        let crc_bytes = bytes
            .get(pos + 12 + len..pos + 16 + len)
            .with_context(|| format!("{name}: record {index}: missing data CRC"))?;
        if u32::from_le_bytes(crc_bytes.try_into().unwrap()) != masked_crc32c(data) {
            bail!("{name}: record {index}: data CRC mismatch");
        }
        events.push(
            decode_event(data).with_context(|| format!("{name}: record {index}: bad Event"))?,
        );
        pos += 16 + len;
        index += 1;
    }
    Ok(events)
}

/// One protobuf field: its number and its payload.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).context("truncated varint")?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        bail!("varint too long")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .context("truncated field")?;
        self.pos += n;
        Ok(s)
    }

    fn next_field(&mut self) -> Result<Option<(u32, Field<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(self.take(8)?.try_into().unwrap()),
            2 => {
                let n = self.varint()? as usize;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(self.take(4)?.try_into().unwrap()),
            t => bail!("unsupported wire type {t}"),
        };
        Ok(Some((field, value)))
    }
}

fn decode_event(data: &[u8]) -> Result<Event> {
    let mut ev = Event::default();
    let mut r = Reader { buf: data, pos: 0 };
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Field::Fixed64(b)) => ev.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => ev.step = v as i64,
            (3, Field::Bytes(b)) => ev.file_version = Some(String::from_utf8(b.to_vec())?),
            (5, Field::Bytes(b)) => decode_summary(b, &mut ev.scalars)?,
            _ => {} // other Event fields are not ours to interpret
        }
    }
    Ok(ev)
}

fn decode_summary(data: &[u8], out: &mut Vec<(String, f32)>) -> Result<()> {
    let mut r = Reader { buf: data, pos: 0 };
    while let Some((field, value)) = r.next_field()? {
        if let (1, Field::Bytes(b)) = (field, value) {
            let mut vr = Reader { buf: b, pos: 0 };
            let (mut tag, mut val) = (String::new(), None);
            while let Some((f, v)) = vr.next_field()? {
                match (f, v) {
                    (1, Field::Bytes(t)) => tag = String::from_utf8(t.to_vec())?,
                    (2, Field::Fixed32(x)) => val = Some(f32::from_le_bytes(x)),
                    _ => {}
                }
            }
            if let Some(v) = val {
                out.push((tag, v));
            }
        }
    }
    Ok(())
}

/// Every event file in a log directory (sorted by name, so by creation time).
pub fn event_files(log_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .with_context(|| format!("listing {}", log_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::manual_rotate)] // the reference spells the rotation out on purpose
    fn crc32c_known_vector() {
        // RFC 3720 (iSCSI) test vector: CRC32C of "123456789".
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // Masking by its definition, computed independently.
        let crc: u32 = 0xe306_9283;
        let masked = ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(b"123456789"), masked);
    }

    #[test]
    fn varint_encoding_matches_protobuf_examples() {
        // From the protobuf encoding guide: 150 -> 96 01, 300 -> ac 02.
        let mut b = Vec::new();
        put_varint(&mut b, 150);
        assert_eq!(b, [0x96, 0x01]);
        b.clear();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
        // Field 2, varint 150: 08 is field 1; field 2 is 0x10.
        b.clear();
        put_varint_field(&mut b, 2, 150);
        assert_eq!(b, [0x10, 0x96, 0x01]);
    }

    #[test]
    fn written_file_reads_back_with_valid_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        let name = w.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        for step in 0..5i64 {
            w.add_scalars(
                step,
                &[
                    ("train/reward_mean", step as f64 * 0.25),
                    ("popo/ess", 1.0 + step as f64),
                ],
            )
            .unwrap();
            w.flush().unwrap();
        }
        w.add_scalar("eval/accuracy", f64::NAN, 7).unwrap();
        let path = w.path().to_path_buf();
        drop(w);

        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 7);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert!(events[0].scalars.is_empty());
        assert!(events[0].wall_time > 1.5e9);
        for (i, ev) in events[1..6].iter().enumerate() {
            assert_eq!(ev.step, i as i64);
            assert_eq!(ev.scalars.len(), 2);
            assert_eq!(ev.scalars[0].0, "train/reward_mean");
            assert_eq!(ev.scalars[0].1, i as f32 * 0.25);
            assert_eq!(ev.scalars[1], ("popo/ess".to_string(), 1.0 + i as f32));
        }
        assert_eq!(events[6].step, 7);
        assert!(events[6].scalars[0].1.is_nan());
        assert_eq!(event_files(dir.path()).unwrap(), vec![path]);
    }

    #[test]
    fn corruption_is_detected_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.add_scalar("a", 1.0, 1).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6; // inside the last record's data
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = format!("{:#}", read_events(&path).unwrap_err());
        assert!(err.contains("record 1") && err.contains("CRC"), "{err}");

        bytes.truncate(bytes.len() - 2);
        std::fs::write(&path, &bytes).unwrap();
        let err = format!("{:#}", read_events(&path).unwrap_err());
        assert!(err.contains("record 1"), "{err}");
    }

    #[test]
    fn second_writer_in_same_dir_gets_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        drop((a, b));
        assert_eq!(event_files(dir.path()).unwrap().len(), 2);
    }
}
