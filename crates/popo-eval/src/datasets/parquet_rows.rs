//! The rows of a parquet file as JSON objects of a few named columns, through the parquet
//! crate's record API (no arrow): the hub publishes most datasets as parquet, and a benchmark
//! needs two text columns of a few thousand rows at most.

use anyhow::{anyhow, bail, Context, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;
use serde_json::{Map, Number, Value};
use std::path::Path;

/// The columns `fields` of every row of the parquet file `path`, in file order. Errors name the
/// file, and the row and column where a value is the trouble.
pub fn read_columns(path: &Path, fields: &[&str]) -> Result<Vec<Map<String, Value>>> {
    // A downloaded file is user data; should the reader panic on a malformed one (the crate has
    // before), that becomes this error rather than popo's end.
    std::panic::catch_unwind(|| read(path, fields)).unwrap_or_else(|_| {
        bail!(
            "{}: the parquet reader failed on this file (damaged or truncated?)",
            path.display()
        )
    })
}

fn read(path: &Path, fields: &[&str]) -> Result<Vec<Map<String, Value>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| anyhow!("{}: not a parquet file popo can read: {e}", path.display()))?;
    let root = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema();
    let columns = root.get_fields();
    let mut selected = Vec::new();
    for (i, &name) in fields.iter().enumerate() {
        if fields[..i].contains(&name) {
            continue;
        }
        match columns.iter().find(|c| c.name() == name) {
            Some(c) => selected.push(c.clone()),
            None => bail!(
                "{}: no column `{name}` (its columns: {})",
                path.display(),
                columns
                    .iter()
                    .map(|c| format!("`{}`", c.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    // Only the named columns are decoded: others may hold types popo has no use for.
    let projection = Type::group_type_builder(root.name())
        .with_fields(selected)
        .build()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let at = || format!("{}: row {}", path.display(), i + 1);
        let row = row.map_err(|e| anyhow!("{}: {e}", at()))?;
        let mut obj = Map::new();
        for (name, field) in row.get_column_iter() {
            let value = json(field).map_err(|what| anyhow!("{}: column `{name}` {what}", at()))?;
            obj.insert(name.clone(), value);
        }
        out.push(obj);
    }
    Ok(out)
}

/// A parquet value as JSON, so that parquet and JSONL publications are read by the same rules.
/// The error says what is wrong with the value.
fn json(field: &Field) -> std::result::Result<Value, String> {
    let float = |x: f64| {
        Number::from_f64(x)
            .map(Value::Number)
            .ok_or_else(|| format!("holds {x}, not a finite number"))
    };
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float(x) => float(f64::from(*x))?,
        Field::Double(x) => float(*x)?,
        Field::Str(s) => Value::String(s.clone()),
        // A byte column without the string annotation: text if it is UTF-8.
        Field::Bytes(b) => Value::String(
            std::str::from_utf8(b.data())
                .map_err(|_| "holds bytes that are not UTF-8 text".to_string())?
                .to_string(),
        ),
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .map(json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        other => return Err(format!("holds {other}, which popo does not read as text")),
    })
}
