//! The restricted pickle reader (`sumi_weights::pickle::read`) on arbitrary bytes, with a
//! persistent-id loader shaped as torch's (`('storage', <class>, key, location, numel)`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sumi_weights::pickle::{self, PickleError, Value};

fn storage(pid: Value) -> Result<Value, PickleError> {
    match pid {
        Value::Tuple(t) => match t.as_slice() {
            [Value::Str(tag), Value::Global(_, kind), Value::Str(key), ..] if tag == "storage" => {
                Ok(Value::Storage {
                    kind: kind.clone(),
                    key: key.clone(),
                })
            }
            _ => Err(PickleError::Malformed("persistent id".into())),
        },
        other => Err(PickleError::Malformed(other.describe())),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = pickle::read(data, &storage) {
        let _ = v.describe();
    }
});
