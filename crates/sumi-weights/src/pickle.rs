//! A restricted pickle reader: it builds plain values and tensor references, executes nothing.
//!
//! Only the globals a PyTorch state dict needs are accepted (see [`ALLOWED_GLOBALS`]); they are
//! interpreted by name, never called. Any other global is refused with its name.

use std::collections::HashMap;

/// Globals the reader accepts, interpreted by name. The list follows what A1111's safe
/// unpickler admits for checkpoints: tensors, storages, ordered dicts, and a few inert values
/// old training checkpoints carry (numpy scalars, sets, a Lightning callback's state).
pub const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "DoubleStorage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("__builtin__", "set"),
    ("builtins", "set"),
    // textual-inversion `.pt` files keep `string_to_param` as a module; A1111 admits it too
    ("torch.nn.modules.container", "ParameterDict"),
    (
        "pytorch_lightning.callbacks.model_checkpoint",
        "ModelCheckpoint",
    ),
];

/// How a `torch.nn.ParameterDict` object reads before its state is applied.
const PARAMETER_DICT: &str = "torch.nn.modules.container.ParameterDict";

/// A value built by the reader.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer (pickle longs beyond 64 bits are refused).
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict (insertion order kept).
    Dict(Vec<(Value, Value)>),
    /// An allowed global, not yet applied.
    Global(String, String),
    /// A storage reference from a persistent id.
    Storage {
        /// The storage class name (`FloatStorage`, …).
        kind: String,
        /// The key of its data record in the archive.
        key: String,
    },
    /// A tensor view on a storage.
    Tensor(TensorRef),
    /// An allowed but irrelevant object (numpy scalar, set, callback state); kept inert.
    Opaque(String),
}

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// Storage class name.
    pub kind: String,
    /// Storage record key.
    pub key: String,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum PickleError {
    /// A global outside the allow-list.
    Forbidden(String, String),
    /// Anything else, described.
    Malformed(String),
}

type R<T> = std::result::Result<T, PickleError>;

fn mal<T>(s: impl Into<String>) -> R<T> {
    Err(PickleError::Malformed(s.into()))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(e) => {
                let s = &self.buf[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => mal(format!("unexpected end of pickle at byte {}", self.pos)),
        }
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> R<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> R<&'a str> {
        let rest = &self.buf[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| PickleError::Malformed("unterminated text line".into()))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| PickleError::Malformed("text line is not UTF-8".into()))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> R<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| PickleError::Malformed("string is not UTF-8".into()))
    }
}

fn usize_of(v: &Value, what: &str) -> R<usize> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => mal(format!("{what} is not a non-negative integer: {v:?}")),
    }
}

fn usizes(v: &Value, what: &str) -> R<Vec<usize>> {
    match v {
        Value::Tuple(t) | Value::List(t) => t.iter().map(|d| usize_of(d, what)).collect(),
        _ => mal(format!("{what} is not a tuple: {v:?}")),
    }
}

fn apply(func: Value, args: Value) -> R<Value> {
    let Value::Global(module, name) = func else {
        return mal(format!("call of a non-global value {func:?}"));
    };
    let args = match args {
        Value::Tuple(a) => a,
        other => return mal(format!("call arguments are not a tuple: {other:?}")),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") => {
            if args.len() < 4 {
                return mal("_rebuild_tensor_v2 with fewer than 4 arguments");
            }
            let Value::Storage { kind, key } = &args[0] else {
                return mal(format!("_rebuild_tensor_v2 on a non-storage {:?}", args[0]));
            };
            let shape = usizes(&args[2], "tensor size")?;
            let stride = usizes(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return mal("tensor size and stride differ in length");
            }
            Ok(Value::Tensor(TensorRef {
                kind: kind.clone(),
                key: key.clone(),
                offset: usize_of(&args[1], "storage offset")?,
                shape,
                stride,
            }))
        }
        ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            other => mal(format!("_rebuild_parameter on {other:?}")),
        },
        _ => Ok(Value::Opaque(format!("{module}.{name}"))),
    }
}

/// Reads a pickle. `persistent` turns a persistent id into a value (torch: storages).
pub fn read(buf: &[u8], persistent: &dyn Fn(Value) -> R<Value>) -> R<Value> {
    let mut r = Reader { buf, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    macro_rules! pop {
        () => {
            match stack.pop() {
                Some(v) => v,
                None => return mal(format!("stack underflow at byte {}", r.pos)),
            }
        };
    }
    macro_rules! pop_mark {
        () => {{
            let m = match marks.pop() {
                Some(m) if m <= stack.len() => m,
                _ => return mal(format!("missing mark at byte {}", r.pos)),
            };
            stack.split_off(m)
        }};
    }
    loop {
        let at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?;
            }
            0x95 => {
                r.u64()?;
            }
            b'.' => return stack.pop().map_or_else(|| mal("empty stack at STOP"), Ok),
            b'(' => marks.push(stack.len()),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(r.u32()? as i32 as i64)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return mal("integer wider than 64 bits");
                }
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'I' => {
                let l = r.line()?;
                stack.push(match l {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    _ => Value::Int(
                        l.parse()
                            .map_err(|_| PickleError::Malformed(format!("bad INT `{l}`")))?,
                    ),
                });
            }
            b'G' => {
                let mut a = [0u8; 8];
                a.copy_from_slice(r.take(8)?);
                stack.push(Value::Float(f64::from_be_bytes(a)));
            }
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            0x8d => {
                let n = usize::try_from(r.u64()?)
                    .map_err(|_| PickleError::Malformed("huge string".into()))?;
                stack.push(Value::Str(r.string(n)?));
            }
            b'T' | b'B' => {
                let n = r.u32()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'U' | b'C' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            0x8f => stack.push(Value::Opaque("set".into())),
            b't' => {
                let items = pop_mark!();
                stack.push(Value::Tuple(items));
            }
            b'l' => {
                let items = pop_mark!();
                stack.push(Value::List(items));
            }
            b'd' => {
                let items = pop_mark!();
                stack.push(Value::Dict(pairs(items)?));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return mal("stack underflow building a tuple");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'a' => {
                let v = pop!();
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return mal(format!("APPEND to a non-list at byte {at}")),
                }
            }
            b'e' => {
                let items = pop_mark!();
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return mal(format!("APPENDS to a non-list at byte {at}")),
                }
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    _ => return mal(format!("SETITEM on a non-dict at byte {at}")),
                }
            }
            b'u' => {
                let items = pop_mark!();
                let p = pairs(items)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.extend(p),
                    _ => return mal(format!("SETITEMS on a non-dict at byte {at}")),
                }
            }
            0x90 => {
                let _ = pop_mark!();
                match stack.last() {
                    Some(Value::Opaque(_)) => {}
                    _ => return mal(format!("ADDITEMS on a non-set at byte {at}")),
                }
            }
            0x91 => {
                let _ = pop_mark!();
                stack.push(Value::Opaque("frozenset".into()));
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                stack.push(global(module, name)?);
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(global(m, n)?),
                    _ => return mal("STACK_GLOBAL with non-string names"),
                }
            }
            b'R' => {
                let args = pop!();
                let func = pop!();
                stack.push(apply(func, args)?);
            }
            0x81 => {
                let _args = pop!();
                let cls = pop!();
                match cls {
                    Value::Global(m, n) => stack.push(Value::Opaque(format!("{m}.{n}"))),
                    _ => return mal("NEWOBJ on a non-class"),
                }
            }
            0x92 => {
                let _kwargs = pop!();
                let _args = pop!();
                match pop!() {
                    Value::Global(m, n) => stack.push(Value::Opaque(format!("{m}.{n}"))),
                    _ => return mal("NEWOBJ_EX on a non-class"),
                }
            }
            b'b' => {
                // State for an object being built: dicts, tensors and inert objects ignore it;
                // a `ParameterDict` becomes the dict of its `_parameters`.
                let state = pop!();
                let Some(top) = stack.last_mut() else {
                    return mal("BUILD with nothing to build");
                };
                if matches!(top, Value::Opaque(n) if n == PARAMETER_DICT) {
                    if let Value::Dict(items) = state {
                        if let Some((_, params)) = items
                            .into_iter()
                            .find(|(k, _)| *k == Value::Str("_parameters".into()))
                        {
                            *top = params;
                        }
                    }
                }
            }
            b'Q' => {
                let pid = pop!();
                stack.push(persistent(pid)?);
            }
            b'P' => return mal("text persistent ids are not used by PyTorch checkpoints"),
            b'q' => {
                let i = r.u8()? as u32;
                memo.insert(i, stack.last().cloned().unwrap_or(Value::None));
            }
            b'r' => {
                let i = r.u32()?;
                memo.insert(i, stack.last().cloned().unwrap_or(Value::None));
            }
            0x94 => {
                let i = memo.len() as u32;
                memo.insert(i, stack.last().cloned().unwrap_or(Value::None));
            }
            b'p' => {
                let i: u32 = r
                    .line()?
                    .parse()
                    .map_err(|_| PickleError::Malformed("bad PUT index".into()))?;
                memo.insert(i, stack.last().cloned().unwrap_or(Value::None));
            }
            b'h' | b'j' | b'g' => {
                let i = match op {
                    b'h' => r.u8()? as u32,
                    b'j' => r.u32()?,
                    _ => r
                        .line()?
                        .parse()
                        .map_err(|_| PickleError::Malformed("bad GET index".into()))?,
                };
                match memo.get(&i) {
                    Some(v) => stack.push(v.clone()),
                    None => return mal(format!("memo entry {i} read before it was written")),
                }
            }
            b'0' => {
                pop!();
            }
            b'1' => {
                let _ = pop_mark!();
            }
            b'2' => {
                let v = stack
                    .last()
                    .cloned()
                    .ok_or_else(|| PickleError::Malformed("DUP on empty stack".into()))?;
                stack.push(v);
            }
            other => {
                return mal(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {at}"
                ))
            }
        }
    }
}

fn global(module: String, name: String) -> R<Value> {
    if ALLOWED_GLOBALS
        .iter()
        .any(|(m, n)| *m == module && *n == name)
    {
        Ok(Value::Global(module, name))
    } else {
        Err(PickleError::Forbidden(module, name))
    }
}

fn pairs(items: Vec<Value>) -> R<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return mal("odd number of items for a dict");
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pid(_: Value) -> R<Value> {
        mal("no persistent ids here")
    }

    #[test]
    fn reads_plain_containers() {
        // pickle.dumps({'a': [1, 2.5, None], 'b': (True, 'x')}, protocol=2)
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00Nesh\x01\x88X\x01\x00\x00\x00xq\x03\x86q\x04X\x01\x00\x00\x00bq\x05h\x04u.";
        let v = read(p, &no_pid).unwrap();
        let Value::Dict(d) = v else {
            panic!("not a dict")
        };
        assert_eq!(d[0].0, Value::Str("a".into()));
        assert_eq!(
            d[0].1,
            Value::List(vec![Value::Int(1), Value::Float(2.5), Value::None])
        );
        assert_eq!(d[1].0, Value::Str("a".into()));
    }

    #[test]
    fn refuses_os_system() {
        // pickle of os.system('echo pwned') via __reduce__, protocol 2.
        let p = b"\x80\x02cposix\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.";
        assert_eq!(
            read(p, &no_pid),
            Err(PickleError::Forbidden("posix".into(), "system".into()))
        );
        let p = b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.";
        assert_eq!(
            read(p, &no_pid),
            Err(PickleError::Forbidden("os".into(), "system".into()))
        );
    }

    #[test]
    fn truncated_pickle_is_an_error() {
        assert!(matches!(
            read(b"\x80\x02}q\x00(X\x05\x00", &no_pid),
            Err(PickleError::Malformed(_))
        ));
        assert!(matches!(read(b"", &no_pid), Err(PickleError::Malformed(_))));
    }
}
