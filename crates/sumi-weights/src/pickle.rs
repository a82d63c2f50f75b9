//! A restricted pickle reader: it builds plain values and tensor references, executes nothing.
//!
//! Only the globals a PyTorch state dict needs are accepted (see [`ALLOWED_GLOBALS`]); they are
//! interpreted by name, never called. Any other global is refused with its name.

mod vm;

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
    /// A tensor view on a storage (boxed: it is the largest variant, and every stack and memo
    /// slot is as large as the largest variant).
    Tensor(Box<TensorRef>),
    /// An allowed but irrelevant object (numpy scalar, set, callback state); kept inert.
    Opaque(String),
}

impl Value {
    /// A short description for error messages: scalars as they read (strings cut to 64
    /// characters), containers by kind and length, never a whole (possibly huge) value.
    pub fn describe(&self) -> String {
        let cut = |s: &str| match s.char_indices().nth(64) {
            Some((i, _)) => format!("{:?}…", &s[..i]),
            None => format!("{s:?}"),
        };
        match self {
            Value::List(v) => format!("a list of {} items", v.len()),
            Value::Tuple(v) => format!("a tuple of {} items", v.len()),
            Value::Dict(v) => format!("a dict of {} items", v.len()),
            Value::Str(s) => cut(s),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Global(m, n) => format!("the global {}", cut(&format!("{m}.{n}"))),
            Value::Storage { kind, key } => format!("a {} `{}`", cut(kind), cut(key)),
            Value::Tensor(t) => format!("a tensor of {} dimensions", t.shape.len()),
            Value::Opaque(s) => format!("an object {}", cut(s)),
            Value::None | Value::Bool(_) | Value::Int(_) | Value::Float(_) => format!("{self:?}"),
        }
    }
}

/// Most dimensions a tensor may have (PyTorch's kernels take at most 25).
pub const MAX_DIMS: usize = 64;

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
        _ => mal(format!(
            "{what} is not a non-negative integer: {}",
            v.describe()
        )),
    }
}

fn usizes(v: &Value, what: &str) -> R<Vec<usize>> {
    match v {
        Value::Tuple(t) | Value::List(t) if t.len() > MAX_DIMS => mal(format!(
            "{what} has {} dimensions, more than {MAX_DIMS}",
            t.len()
        )),
        Value::Tuple(t) | Value::List(t) => t.iter().map(|d| usize_of(d, what)).collect(),
        _ => mal(format!("{what} is not a tuple: {}", v.describe())),
    }
}

fn apply(func: Value, args: Value) -> R<Value> {
    let Value::Global(module, name) = func else {
        return mal(format!("call of a non-global value, {}", func.describe()));
    };
    let args = match args {
        Value::Tuple(a) => a,
        other => {
            return mal(format!(
                "call arguments are not a tuple: {}",
                other.describe()
            ))
        }
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") => {
            if args.len() < 4 {
                return mal("_rebuild_tensor_v2 with fewer than 4 arguments");
            }
            let Value::Storage { kind, key } = &args[0] else {
                return mal(format!(
                    "_rebuild_tensor_v2 on a non-storage, {}",
                    args[0].describe()
                ));
            };
            let shape = usizes(&args[2], "tensor size")?;
            let stride = usizes(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return mal("tensor size and stride differ in length");
            }
            Ok(Value::Tensor(Box::new(TensorRef {
                kind: kind.clone(),
                key: key.clone(),
                offset: usize_of(&args[1], "storage offset")?,
                shape,
                stride,
            })))
        }
        ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            other => mal(format!(
                "_rebuild_parameter on {}",
                other.map_or_else(|| "nothing".into(), |v| v.describe())
            )),
        },
        _ => Ok(Value::Opaque(format!("{module}.{name}"))),
    }
}

/// Deepest nesting of containers (lists, tuples, dicts) a pickle may build. A state dict nests
/// about six deep (root, `state_dict`, optimizer states, …); deeper values would make dropping,
/// comparing or printing them recurse without bound.
pub const MAX_DEPTH: u32 = 100;
/// Most values a pickle may create in all, copies made by `DUP` and memo reads included (about
/// 64 bytes each on the stack, so at most about 130 MB). A state dict takes about 15 per
/// tensor: tens of thousands for an SD checkpoint with EMA, a few hundred thousand at most
/// with optimizer state.
pub const MAX_VALUES: u64 = 2 << 20;
/// Most bytes of strings and byte strings a pickle may create in all, copies included.
pub const MAX_VALUE_BYTES: u64 = 128 << 20;
/// Most memo entries a pickle may hold.
pub const MAX_MEMO: usize = 1 << 20;

/// Reads a pickle. `persistent` turns a persistent id into a value (torch: storages).
///
/// The machine is bounded: values nest at most [`MAX_DEPTH`] deep, at most [`MAX_VALUES`]
/// values and [`MAX_VALUE_BYTES`] bytes of strings are created (copies by `DUP` and the memo
/// included) and the memo holds at most [`MAX_MEMO`] entries; beyond, the pickle is refused.
pub fn read(buf: &[u8], persistent: &dyn Fn(Value) -> R<Value>) -> R<Value> {
    let mut vm = vm::Vm::new(buf);
    loop {
        if let Some(v) = vm.step(persistent)? {
            return Ok(v);
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
