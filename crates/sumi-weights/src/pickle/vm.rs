//! The pickle machine behind [`super::read`]: its stack, marks and memo, bounded by
//! [`MAX_DEPTH`], [`MAX_VALUES`], [`MAX_VALUE_BYTES`] and [`MAX_MEMO`].

use std::collections::HashMap;

use super::{
    apply, global, mal, pairs, PickleError, Reader, Value, MAX_DEPTH, MAX_MEMO, MAX_VALUES,
    MAX_VALUE_BYTES, PARAMETER_DICT, R,
};

/// Values and string bytes in `v` (a copy's cost), at most [`MAX_DEPTH`] deep by construction.
fn weight(v: &Value) -> (u64, u64) {
    let len = |s: &str| s.len() as u64;
    match v {
        Value::Str(s) | Value::Opaque(s) => (1, len(s)),
        Value::Bytes(b) => (1, b.len() as u64),
        Value::List(items) | Value::Tuple(items) => items.iter().fold((1, 0), |(n, b), x| {
            let (xn, xb) = weight(x);
            (n + xn, b + xb)
        }),
        Value::Dict(items) => items.iter().fold((1, 0), |(n, b), (k, x)| {
            let (kn, kb) = weight(k);
            let (xn, xb) = weight(x);
            (n + kn + xn, b + kb + xb)
        }),
        Value::Global(m, n) | Value::Storage { kind: m, key: n } => (1, len(m) + len(n)),
        Value::Tensor(t) => (1, len(&t.kind) + len(&t.key) + 16 * t.shape.len() as u64),
        Value::None | Value::Bool(_) | Value::Int(_) | Value::Float(_) => (1, 0),
    }
}

/// Nesting depth of `v`: 0 for a scalar, 1 for an empty container.
fn depth_of(v: &Value) -> u32 {
    match v {
        Value::List(items) | Value::Tuple(items) => {
            1 + items.iter().map(depth_of).max().unwrap_or(0)
        }
        Value::Dict(items) => {
            1 + items
                .iter()
                .map(|(k, x)| depth_of(k).max(depth_of(x)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// A stack or memo entry: a value and its nesting depth.
type Slot = (Value, u32);

/// The pickle machine: its stack, marks and memo, and what it has created so far.
pub(super) struct Vm<'a> {
    r: Reader<'a>,
    stack: Vec<Slot>,
    marks: Vec<usize>,
    memo: HashMap<u32, Slot>,
    values: u64,
    bytes: u64,
    /// Byte offset of the opcode being run.
    at: usize,
}

impl<'a> Vm<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self {
            r: Reader { buf, pos: 0 },
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            values: 0,
            bytes: 0,
            at: 0,
        }
    }

    /// Counts `values` new values holding `bytes` bytes against the limits.
    fn charge(&mut self, values: u64, bytes: u64) -> R<()> {
        self.values += values;
        self.bytes += bytes;
        if self.values > MAX_VALUES {
            return mal(format!("more than {MAX_VALUES} values at byte {}", self.at));
        }
        if self.bytes > MAX_VALUE_BYTES {
            return mal(format!(
                "more than {MAX_VALUE_BYTES} bytes of values at byte {}",
                self.at
            ));
        }
        Ok(())
    }

    fn check_depth(&self, depth: u32) -> R<u32> {
        if depth > MAX_DEPTH {
            return mal(format!(
                "values nested deeper than {MAX_DEPTH} at byte {}",
                self.at
            ));
        }
        Ok(depth)
    }

    /// Pushes a new scalar, string or empty container.
    fn push(&mut self, v: Value) -> R<()> {
        let (n, b) = weight(&v);
        self.charge(n, b)?;
        let d = depth_of(&v);
        self.stack.push((v, d));
        Ok(())
    }

    /// Pushes a container built from values already counted.
    fn push_built(&mut self, v: Value, items_depth: u32) -> R<()> {
        self.charge(1, 0)?;
        let d = self.check_depth(items_depth + 1)?;
        self.stack.push((v, d));
        Ok(())
    }

    /// A copy of the top of the stack (`None` if empty) or of memo entry `memo`, counted as
    /// new values before it is made.
    fn copy(&mut self, memo: Option<u32>) -> R<Slot> {
        let Some((n, b)) = self.source(memo)?.map(|s| weight(&s.0)) else {
            return Ok((Value::None, 0));
        };
        self.charge(n, b)?;
        Ok(self.source(memo)?.cloned().unwrap_or((Value::None, 0)))
    }

    /// The top of the stack (with `None`) or memo entry `i`.
    fn source(&self, memo: Option<u32>) -> R<Option<&Slot>> {
        match memo {
            None => Ok(self.stack.last()),
            Some(i) => match self.memo.get(&i) {
                Some(s) => Ok(Some(s)),
                None => mal(format!("memo entry {i} read before it was written")),
            },
        }
    }

    fn pop(&mut self) -> R<Slot> {
        match self.stack.pop() {
            Some(s) => Ok(s),
            None => mal(format!("stack underflow at byte {}", self.r.pos)),
        }
    }

    /// The values above the last mark, and their greatest depth.
    fn pop_mark(&mut self) -> R<(Vec<Value>, u32)> {
        let m = match self.marks.pop() {
            Some(m) if m <= self.stack.len() => m,
            _ => return mal(format!("missing mark at byte {}", self.r.pos)),
        };
        let items = self.stack.split_off(m);
        let depth = items.iter().map(|s| s.1).max().unwrap_or(0);
        Ok((items.into_iter().map(|s| s.0).collect(), depth))
    }

    /// Stores a copy of the top of the stack (`None` if empty) under memo index `i`.
    fn put(&mut self, i: u32) -> R<()> {
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&i) {
            return mal(format!(
                "more than {MAX_MEMO} memo entries at byte {}",
                self.at
            ));
        }
        let slot = self.copy(None)?;
        self.memo.insert(i, slot);
        Ok(())
    }

    /// The top of the stack, to be extended by an item of depth `item_depth`.
    fn top_for(&mut self, item_depth: u32, what: &str) -> R<&mut Value> {
        let at = self.at;
        let d = self.check_depth(item_depth + 1)?;
        match self.stack.last_mut() {
            Some((v, depth)) => {
                *depth = (*depth).max(d);
                Ok(v)
            }
            None => mal(format!("{what} on an empty stack at byte {at}")),
        }
    }

    /// Runs one opcode; `Some` with the result at `STOP`.
    pub(super) fn step(&mut self, persistent: &dyn Fn(Value) -> R<Value>) -> R<Option<Value>> {
        self.at = self.r.pos;
        let op = self.r.u8()?;
        match op {
            0x80 => {
                self.r.u8()?;
            }
            0x95 => {
                self.r.u64()?;
            }
            b'.' => {
                return match self.stack.pop() {
                    Some(s) => Ok(Some(s.0)),
                    None => mal("empty stack at STOP"),
                }
            }
            b'(' => {
                if self.marks.len() >= MAX_DEPTH as usize {
                    return mal(format!(
                        "values nested deeper than {MAX_DEPTH} at byte {}",
                        self.at
                    ));
                }
                self.marks.push(self.stack.len());
            }
            b't' | b'l' | b'd' | 0x85..=0x87 => self.build(op)?,
            b'a' | b'e' | b's' | b'u' | 0x90 | 0x91 => self.extend(op)?,
            b'c' | 0x93 | b'R' | 0x81 | 0x92 | b'b' | b'Q' | b'P' => self.object(op, persistent)?,
            b'q' | b'r' | 0x94 | b'p' | b'h' | b'j' | b'g' | b'0' | b'1' | b'2' => {
                self.memo_op(op)?
            }
            _ => {
                let v = self.scalar(op)?;
                self.push(v)?;
            }
        }
        Ok(None)
    }

    /// Opcodes that push a scalar, a string or an empty container (and the framing ones).
    fn scalar(&mut self, op: u8) -> R<Value> {
        let r = &mut self.r;
        Ok(match op {
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'J' => Value::Int(r.u32()? as i32 as i64),
            b'K' => Value::Int(r.u8()? as i64),
            b'M' => Value::Int(r.u16()? as i64),
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
                Value::Int(v)
            }
            b'I' => {
                let l = r.line()?;
                match l {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    _ => Value::Int(
                        l.parse()
                            .map_err(|_| PickleError::Malformed(format!("bad INT `{l}`")))?,
                    ),
                }
            }
            b'G' => {
                let mut a = [0u8; 8];
                a.copy_from_slice(r.take(8)?);
                Value::Float(f64::from_be_bytes(a))
            }
            b'X' => {
                let n = r.u32()? as usize;
                Value::Str(r.string(n)?)
            }
            0x8c => {
                let n = r.u8()? as usize;
                Value::Str(r.string(n)?)
            }
            0x8d => {
                let n = usize::try_from(r.u64()?)
                    .map_err(|_| PickleError::Malformed("huge string".into()))?;
                Value::Str(r.string(n)?)
            }
            b'T' | b'B' => {
                let n = r.u32()? as usize;
                Value::Bytes(r.take(n)?.to_vec())
            }
            b'U' | b'C' => {
                let n = r.u8()? as usize;
                Value::Bytes(r.take(n)?.to_vec())
            }
            b'}' => Value::Dict(Vec::new()),
            b']' => Value::List(Vec::new()),
            b')' => Value::Tuple(Vec::new()),
            0x8f => Value::Opaque("set".into()),
            other => {
                return mal(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    self.at
                ))
            }
        })
    }

    /// `TUPLE`, `LIST`, `DICT` (from a mark) and `TUPLE1`–`TUPLE3`.
    fn build(&mut self, op: u8) -> R<()> {
        let (items, depth) = match op {
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return mal("stack underflow building a tuple");
                }
                let items = self.stack.split_off(self.stack.len() - n);
                let depth = items.iter().map(|s| s.1).max().unwrap_or(0);
                (items.into_iter().map(|s| s.0).collect(), depth)
            }
            _ => self.pop_mark()?,
        };
        let v = match op {
            b'l' => Value::List(items),
            b'd' => Value::Dict(pairs(items)?),
            _ => Value::Tuple(items),
        };
        self.push_built(v, depth)
    }

    /// `APPEND`, `APPENDS`, `SETITEM`, `SETITEMS`, `ADDITEMS`, `FROZENSET`.
    fn extend(&mut self, op: u8) -> R<()> {
        let at = self.at;
        match op {
            b'a' => {
                let (v, d) = self.pop()?;
                match self.top_for(d, "APPEND")? {
                    Value::List(l) => l.push(v),
                    _ => return mal(format!("APPEND to a non-list at byte {at}")),
                }
            }
            b'e' => {
                let (items, d) = self.pop_mark()?;
                match self.top_for(d, "APPENDS")? {
                    Value::List(l) => l.extend(items),
                    _ => return mal(format!("APPENDS to a non-list at byte {at}")),
                }
            }
            b's' => {
                let (v, vd) = self.pop()?;
                let (k, kd) = self.pop()?;
                match self.top_for(vd.max(kd), "SETITEM")? {
                    Value::Dict(d) => d.push((k, v)),
                    _ => return mal(format!("SETITEM on a non-dict at byte {at}")),
                }
            }
            b'u' => {
                let (items, d) = self.pop_mark()?;
                let p = pairs(items)?;
                match self.top_for(d, "SETITEMS")? {
                    Value::Dict(d) => d.extend(p),
                    _ => return mal(format!("SETITEMS on a non-dict at byte {at}")),
                }
            }
            0x90 => {
                let _ = self.pop_mark()?;
                match self.stack.last() {
                    Some((Value::Opaque(_), _)) => {}
                    _ => return mal(format!("ADDITEMS on a non-set at byte {at}")),
                }
            }
            _ => {
                let _ = self.pop_mark()?;
                self.push(Value::Opaque("frozenset".into()))?;
            }
        }
        Ok(())
    }

    /// Globals, calls, object construction and persistent ids.
    fn object(&mut self, op: u8, persistent: &dyn Fn(Value) -> R<Value>) -> R<()> {
        let v = match op {
            b'c' => {
                let module = self.r.line()?.to_string();
                let name = self.r.line()?.to_string();
                global(module, name)?
            }
            0x93 => {
                let name = self.pop()?.0;
                let module = self.pop()?.0;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => global(m, n)?,
                    _ => return mal("STACK_GLOBAL with non-string names"),
                }
            }
            b'R' => {
                let args = self.pop()?.0;
                let func = self.pop()?.0;
                apply(func, args)?
            }
            0x81 | 0x92 => {
                if op == 0x92 {
                    self.pop()?;
                }
                self.pop()?;
                match self.pop()?.0 {
                    Value::Global(m, n) => Value::Opaque(format!("{m}.{n}")),
                    _ => return mal("NEWOBJ on a non-class"),
                }
            }
            b'b' => return self.build_state(),
            b'Q' => {
                let pid = self.pop()?.0;
                persistent(pid)?
            }
            _ => return mal("text persistent ids are not used by PyTorch checkpoints"),
        };
        self.push(v)
    }

    /// `BUILD`: dicts, tensors and inert objects ignore their state; a `ParameterDict`
    /// becomes the dict of its `_parameters`.
    fn build_state(&mut self) -> R<()> {
        let (state, depth) = self.pop()?;
        let Some((top, top_depth)) = self.stack.last_mut() else {
            return mal("BUILD with nothing to build");
        };
        if matches!(top, Value::Opaque(n) if n == PARAMETER_DICT) {
            if let Value::Dict(items) = state {
                if let Some((_, params)) = items
                    .into_iter()
                    .find(|(k, _)| *k == Value::Str("_parameters".into()))
                {
                    *top = params;
                    *top_depth = depth;
                }
            }
        }
        Ok(())
    }

    /// The memo, `POP`, `POP_MARK` and `DUP`.
    fn memo_op(&mut self, op: u8) -> R<()> {
        match op {
            b'q' => {
                let i = self.r.u8()? as u32;
                self.put(i)
            }
            b'r' => {
                let i = self.r.u32()?;
                self.put(i)
            }
            0x94 => self.put(self.memo.len() as u32),
            b'p' => {
                let i: u32 = self
                    .r
                    .line()?
                    .parse()
                    .map_err(|_| PickleError::Malformed("bad PUT index".into()))?;
                self.put(i)
            }
            b'h' | b'j' | b'g' => {
                let i = match op {
                    b'h' => self.r.u8()? as u32,
                    b'j' => self.r.u32()?,
                    _ => self
                        .r
                        .line()?
                        .parse()
                        .map_err(|_| PickleError::Malformed("bad GET index".into()))?,
                };
                let slot = self.copy(Some(i))?;
                self.stack.push(slot);
                Ok(())
            }
            b'0' => self.pop().map(drop),
            b'1' => self.pop_mark().map(drop),
            _ => {
                if self.stack.is_empty() {
                    return mal("DUP on empty stack");
                }
                let slot = self.copy(None)?;
                self.stack.push(slot);
                Ok(())
            }
        }
    }
}
