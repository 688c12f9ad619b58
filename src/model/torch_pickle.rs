//! PyTorch checkpoints (`torch.save` of a state dict) read without libtorch, for the
//! `pytorch_adapter.bin` / `pytorch_model_head.bin` / `pytorch_model.bin` files of old
//! AdapterHub and Hugging Face releases.
//!
//! Two containers hold the same pickle:
//! - the zip archive of PyTorch >= 1.6: `<archive>/data.pkl`, one raw storage per
//!   `<archive>/data/<key>`, and `<archive>/byteorder` ("little" when absent);
//! - the older stream: five pickles (magic number, protocol version, system info, the object,
//!   the list of storage keys) followed by each storage as an element count and raw bytes.
//!
//! The pickle is run by a small interpreter that knows only what a state dict needs: dicts
//! (`collections.OrderedDict`), tuples, numbers, strings, and tensors built by
//! `torch._utils._rebuild_tensor_v2` on storages named by persistent ids
//! `('storage', <dtype>Storage, key, location, numel)`. Any other global is refused, so a
//! checkpoint can never run code. Tensors may be strided views and may share storages; each
//! storage is read once, the tensors on it are copied out as dense fp32, and it is dropped.
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};

use super::weights::{Entry, Tensor, Weights};

/// Reads every tensor of a `torch.save`d state dict, renaming each with `rename` (return
/// `None` to skip a tensor), exactly like `Weights::read_safetensors`: two tensors that land on
/// one name are an error, and so is a kept tensor that is not of a float type.
pub fn read(path: &Path, rename: impl Fn(&str) -> Option<String>) -> Result<Weights> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let tensors = read_container(BufReader::new(file), &rename)
        .with_context(|| format!("reading PyTorch checkpoint {}", path.display()))?;
    let shared = Arc::new(path.to_path_buf());
    let mut weights = Weights::default();
    for (canonical, stored_name, tensor) in tensors {
        weights.insert(canonical, Entry::in_memory(tensor, shared.clone(), stored_name))?;
    }
    Ok(weights)
}

/// Kept tensors in the state dict's order: (canonical name, stored name, tensor).
type Kept = Vec<(String, String, Tensor)>;

fn read_container(mut file: BufReader<File>, rename: &dyn Fn(&str) -> Option<String>) -> Result<Kept> {
    let head = file.fill_buf()?;
    if head.starts_with(b"PK\x03\x04") {
        read_zip(file, rename)
    } else if head.starts_with(&LEGACY_MAGIC) {
        read_legacy(file, rename)
    } else {
        bail!("not a PyTorch checkpoint (neither a zip archive nor the legacy torch.save stream)")
    }
}

fn read_zip(file: BufReader<File>, rename: &dyn Fn(&str) -> Option<String>) -> Result<Kept> {
    let archive_size = file.get_ref().metadata()?.len();
    let mut zip = zip::ZipArchive::new(file).context("not a readable zip archive")?;
    let pickles: Vec<String> =
        zip.file_names().filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1).map(str::to_string).collect();
    let [pickle] = &pickles[..] else {
        bail!("expected one `<archive>/data.pkl` in the zip archive, found {}", pickles.len());
    };
    let prefix = pickle.strip_suffix("data.pkl").expect("filtered above").to_string();
    let entry = |zip: &mut zip::ZipArchive<BufReader<File>>, name: &str| -> Result<Vec<u8>> {
        let mut f = zip.by_name(name).with_context(|| format!("zip entry `{name}`"))?;
        // The size is the archive's claim: a stored entry is never larger than the archive,
        // and a compressed one grows the buffer as it is read.
        let mut bytes = Vec::with_capacity(f.size().min(archive_size) as usize);
        f.read_to_end(&mut bytes).with_context(|| format!("reading zip entry `{name}`"))?;
        Ok(bytes)
    };
    let byteorder = format!("{prefix}byteorder");
    let has_byteorder = zip.file_names().any(|n| n == byteorder);
    let big_endian = match has_byteorder {
        false => false,
        true => match entry(&mut zip, &byteorder)?.as_slice() {
            b"little" => false,
            b"big" => true,
            other => bail!("unknown byte order `{}`", String::from_utf8_lossy(other)),
        },
    };
    let root = unpickle(&mut entry(&mut zip, pickle)?.as_slice()).with_context(|| format!("in `{pickle}`"))?;
    let plan = Plan::new(root, rename)?;
    let mut out = plan.empty();
    for key in plan.storage_keys() {
        let bytes = entry(&mut zip, &format!("{prefix}data/{key}"))?;
        plan.copy_out(key, &bytes, big_endian, &mut out)?;
    }
    Ok(plan.finish(out))
}

/// `pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)`: the first pickle of the legacy format.
const LEGACY_MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];

fn read_legacy(mut file: BufReader<File>, rename: &dyn Fn(&str) -> Option<String>) -> Result<Kept> {
    let size = file.get_ref().metadata()?.len();
    unpickle(&mut file).context("in the magic number")?;
    match unpickle(&mut file).context("in the protocol version")? {
        Value::Int(1001) => {}
        other => bail!("unknown legacy protocol version {}", other.kind()),
    }
    let info = unpickle(&mut file).context("in the system info")?;
    let little_endian = match info.dict_get("little_endian") {
        Some(Value::Bool(b)) => b,
        _ => true,
    };
    let root = unpickle(&mut file).context("in the state dict")?;
    let keys = match unpickle(&mut file).context("in the storage key list")? {
        Value::List(ref items) => items.borrow().iter().map(|k| k.as_str().map(str::to_string)).collect::<Option<Vec<_>>>(),
        _ => None,
    }
    .context("the storage key list is not a list of strings")?;
    let plan = Plan::new(root, rename)?;
    let mut out = plan.empty();
    for key in &keys {
        let mut count = [0u8; 8];
        file.read_exact(&mut count).with_context(|| format!("storage `{key}`: file ends early"))?;
        let count = if little_endian { u64::from_le_bytes(count) } else { u64::from_be_bytes(count) };
        let width = plan.storages.get(key.as_str()).with_context(|| format!("storage `{key}` is not used by the pickle"))?.dtype.width();
        let bytes = count.checked_mul(width as u64).filter(|&b| b <= size).with_context(|| {
            format!("storage `{key}`: {count} elements do not fit a file of {size} bytes")
        })?;
        if plan.needed.contains_key(key.as_str()) {
            let mut data = Vec::with_capacity(bytes as usize);
            (&mut file).take(bytes).read_to_end(&mut data)?;
            ensure!(data.len() as u64 == bytes, "storage `{key}`: file ends early");
            plan.copy_out(key, &data, !little_endian, &mut out)?;
        } else {
            let skipped = std::io::copy(&mut (&mut file).take(bytes), &mut std::io::sink())?;
            ensure!(skipped == bytes, "storage `{key}`: file ends early");
        }
    }
    for key in plan.needed.keys() {
        ensure!(keys.iter().any(|k| k == key), "storage `{key}` is missing from the storage key list");
    }
    Ok(plan.finish(out))
}

// ---- from the unpickled object to tensors ----------------------------------------------------

/// The state dict's tensors, which of them `rename` keeps, and the storages they need.
struct Plan {
    /// (canonical name, stored name, tensor reference), in the dict's order.
    kept: Vec<(String, String, Rc<TensorRef>)>,
    /// Storage key -> indices into `kept`.
    needed: BTreeMap<String, Vec<usize>>,
    /// Every storage of the pickle, kept or not.
    storages: HashMap<String, Rc<Storage>>,
}

impl Plan {
    fn new(root: Value, rename: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let Value::Dict(ref items) = root else {
            bail!("expected a dict of tensors (a state dict), found {}", root.kind());
        };
        let mut kept = Vec::new();
        let mut needed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut storages: HashMap<String, Rc<Storage>> = HashMap::new();
        for (key, value) in items.borrow().iter() {
            let Value::Str(name) = key else { bail!("the state dict has a key that is not a string: {}", key.kind()) };
            let Value::Tensor(tensor) = value else {
                bail!("tensor `{name}`: the value is {}, not a tensor", value.kind());
            };
            let storage = &tensor.storage;
            match storages.get(&storage.key) {
                Some(s) if s.dtype != storage.dtype => {
                    bail!("tensor `{name}`: storage `{}` is used as both {} and {}", storage.key, s.dtype.name(), storage.dtype.name())
                }
                Some(_) => {}
                None => {
                    storages.insert(storage.key.clone(), storage.clone());
                }
            }
            let Some(canonical) = rename(name) else { continue };
            if !storage.dtype.is_float() {
                bail!("tensor `{name}`: dtype {} is not a float type", storage.dtype.name());
            }
            needed.entry(storage.key.clone()).or_default().push(kept.len());
            kept.push((canonical, name.clone(), tensor.clone()));
        }
        Ok(Self { kept, needed, storages })
    }

    fn storage_keys(&self) -> impl Iterator<Item = &str> {
        self.needed.keys().map(String::as_str)
    }

    fn empty(&self) -> Vec<Option<Tensor>> {
        vec![None; self.kept.len()]
    }

    /// Copies every kept tensor on storage `key` out of its raw bytes.
    fn copy_out(&self, key: &str, bytes: &[u8], big_endian: bool, out: &mut [Option<Tensor>]) -> Result<()> {
        for &i in self.needed.get(key).into_iter().flatten() {
            let (_, name, tensor) = &self.kept[i];
            out[i] = Some(tensor.gather(bytes, big_endian).with_context(|| format!("tensor `{name}`"))?);
        }
        Ok(())
    }

    fn finish(self, out: Vec<Option<Tensor>>) -> Kept {
        self.kept
            .into_iter()
            .zip(out)
            .map(|((canonical, stored, _), t)| (canonical, stored, t.expect("every needed storage was read")))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    /// A storage type that is no float type: it may be stored next to the weights (e.g.
    /// `position_ids`), but cannot be read as one.
    Other(&'static str, usize),
}

impl Dtype {
    /// The dtype of `torch.<Name>Storage` (or `torch.cuda.<Name>Storage`).
    fn of_storage(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "DoubleStorage" => Self::F64,
            "LongStorage" => Self::Other("int64", 8),
            "IntStorage" => Self::Other("int32", 4),
            "ShortStorage" => Self::Other("int16", 2),
            "CharStorage" => Self::Other("int8", 1),
            "ByteStorage" => Self::Other("uint8", 1),
            "BoolStorage" => Self::Other("bool", 1),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::F64 => "float64",
            Self::Other(name, _) => name,
        }
    }

    fn width(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::F64 => 8,
            Self::Other(_, width) => width,
        }
    }

    fn is_float(self) -> bool {
        !matches!(self, Self::Other(..))
    }

    /// Reads one element (exactly `width` bytes) as f32.
    fn decoder(self, big_endian: bool) -> fn(&[u8]) -> f32 {
        fn a<const N: usize>(b: &[u8]) -> [u8; N] {
            b.try_into().expect("slices of the dtype's width")
        }
        match (self, big_endian) {
            (Self::F32, false) => |b| f32::from_le_bytes(a(b)),
            (Self::F32, true) => |b| f32::from_be_bytes(a(b)),
            (Self::F16, false) => |b| half::f16::from_le_bytes(a(b)).to_f32(),
            (Self::F16, true) => |b| half::f16::from_be_bytes(a(b)).to_f32(),
            (Self::BF16, false) => |b| half::bf16::from_le_bytes(a(b)).to_f32(),
            (Self::BF16, true) => |b| half::bf16::from_be_bytes(a(b)).to_f32(),
            (Self::F64, false) => |b| f64::from_le_bytes(a(b)) as f32,
            (Self::F64, true) => |b| f64::from_be_bytes(a(b)) as f32,
            (Self::Other(..), _) => unreachable!("only float storages are read"),
        }
    }
}

#[derive(Debug)]
struct Storage {
    key: String,
    dtype: Dtype,
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`: a strided view of a storage.
#[derive(Debug)]
struct TensorRef {
    storage: Rc<Storage>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    /// The view as a dense row-major fp32 tensor, from the storage's raw bytes.
    fn gather(&self, bytes: &[u8], big_endian: bool) -> Result<Tensor> {
        let dtype = self.storage.dtype;
        let (width, decode) = (dtype.width(), dtype.decoder(big_endian));
        let available = bytes.len() / width;
        let numel = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).context("the shape overflows")?;
        if numel == 0 {
            return Ok(Tensor::new(self.shape.clone(), Vec::new()));
        }
        let last = self
            .shape
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |at, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| at.checked_add(x)));
        // A view with more elements than its storage repeats some (stride 0, a broadcast); only
        // small ones are plausible, and a bogus shape must not allocate without bound.
        if last.is_none_or(|last| last >= available) || (numel > available && numel > 1 << 24) {
            bail!(
                "shape {:?} with strides {:?} at offset {} does not fit its storage of {available} {} elements",
                self.shape,
                self.stride,
                self.offset,
                dtype.name()
            );
        }
        let element = |i: usize| decode(&bytes[i * width..(i + 1) * width]);
        let contiguous = self.shape.iter().zip(&self.stride).rev().try_fold(1usize, |expected, (&d, &s)| {
            (d == 1 || s == expected).then_some(expected * d)
        });
        let data: Vec<f32> = if contiguous.is_some() {
            (self.offset..self.offset + numel).map(element).collect()
        } else {
            // Walk the multi-index in row-major order, moving through the storage by strides.
            let mut data = Vec::with_capacity(numel);
            let mut index = vec![0usize; self.shape.len()];
            let mut at = self.offset;
            for _ in 0..numel {
                data.push(element(at));
                for d in (0..index.len()).rev() {
                    index[d] += 1;
                    at += self.stride[d];
                    if index[d] < self.shape[d] {
                        break;
                    }
                    at -= self.stride[d] * self.shape[d];
                    index[d] = 0;
                }
            }
            data
        };
        Ok(Tensor::new(self.shape.clone(), data))
    }
}

// ---- the pickle interpreter ---------------------------------------------------------------------

/// What the interpreter can build. Dicts and lists are shared (`Rc`) as in Python, so that a
/// memoised container that is filled later is seen filled.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64 (only the legacy magic number, which is checked as raw bytes).
    BigInt,
    Float(f64),
    Str(String),
    Bytes,
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRef>),
}

/// A pickle nests values as deep as it likes (a list in a list in a list ...); dropping them
/// recursively would overflow the stack on a hostile file, so a container's items are taken
/// out and dropped one level at a time from a list on the heap.
impl Drop for Value {
    fn drop(&mut self) {
        let mut pending = Vec::new();
        take_items(self, &mut pending);
        while let Some(mut value) = pending.pop() {
            take_items(&mut value, &mut pending);
        }
    }
}

/// Moves the items of a container that nothing else holds into `out`.
fn take_items(value: &mut Value, out: &mut Vec<Value>) {
    match value {
        Value::Tuple(items) => {
            if let Some(items) = Rc::get_mut(items) {
                out.append(items);
            }
        }
        Value::List(items) => {
            if let Some(items) = Rc::get_mut(items) {
                out.append(items.get_mut());
            }
        }
        Value::Dict(items) => {
            if let Some(items) = Rc::get_mut(items) {
                out.extend(items.get_mut().drain(..).flat_map(|(k, v)| [k, v]));
            }
        }
        _ => {}
    }
}

/// The only globals a checkpoint may name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    /// `_rebuild_tensor_v2`, or `_rebuild_tensor` of PyTorch < 0.4: both start with
    /// (storage, offset, size, stride).
    RebuildTensor,
    RebuildParameter,
    StorageType(Dtype),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Result<Self> {
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Self::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Self::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Self::RebuildParameter,
            ("torch" | "torch.cuda", storage) if Dtype::of_storage(storage).is_some() => {
                Self::StorageType(Dtype::of_storage(storage).expect("checked"))
            }
            _ => bail!("unsupported global `{module}.{name}`: only a state dict of tensors can be read"),
        })
    }
}

impl Value {
    fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("the bool {b}"),
            Value::Int(i) => format!("the int {i}"),
            Value::BigInt => "a big int".into(),
            Value::Float(f) => format!("the float {f}"),
            Value::Str(s) => format!("the string {s:?}"),
            Value::Bytes => "bytes".into(),
            Value::Tuple(t) => format!("a tuple of {}", t.len()),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(g) => format!("the global {g:?}"),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn dict_get(&self, key: &str) -> Option<Value> {
        let Value::Dict(items) = self else { return None };
        let items = items.borrow();
        items.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v.clone())
    }

    fn usize(&self, what: &str) -> Result<usize> {
        match self {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            other => bail!("{what} must be a non-negative int, found {}", other.kind()),
        }
    }

    fn usizes(&self, what: &str) -> Result<Vec<usize>> {
        match self {
            Value::Tuple(items) => items.iter().map(|v| v.usize(what)).collect(),
            other => bail!("{what} must be a tuple of ints, found {}", other.kind()),
        }
    }
}

/// Runs one pickle from `r` up to its STOP and returns the object.
fn unpickle(r: &mut impl Read) -> Result<Value> {
    let mut m = Machine { r, at: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };
    loop {
        let at = m.at;
        let op = m.u8().context("the pickle ends before its STOP opcode")?;
        match m.step(op) {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => return Err(e.context(format!("pickle opcode 0x{op:02x} at byte {at}"))),
        }
    }
}

struct Machine<'a, R: Read> {
    r: &'a mut R,
    at: u64,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<R: Read> Machine<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).context("the pickle ends inside an opcode")?;
        self.at += N as u64;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    /// `n` bytes, read without trusting `n` for the allocation.
    fn vec(&mut self, n: u64) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        (&mut *self.r).take(n).read_to_end(&mut v)?;
        ensure!(v.len() as u64 == n, "the pickle ends inside an opcode");
        self.at += n;
        Ok(v)
    }

    fn string(&mut self, n: u64) -> Result<String> {
        String::from_utf8(self.vec(n)?).context("a string is not UTF-8")
    }

    /// A GLOBAL operand: text up to a newline.
    fn line(&mut self) -> Result<String> {
        let mut s = Vec::new();
        loop {
            match self.u8()? {
                b'\n' => break,
                c if s.len() < 256 => s.push(c),
                _ => bail!("a global name is too long"),
            }
        }
        String::from_utf8(s).context("a global name is not UTF-8")
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<Value> {
        match self.stack.last() {
            Some(_) if self.marks.last().is_some_and(|&m| m >= self.stack.len()) => bail!("the stack is empty above the mark"),
            Some(_) => Ok(self.stack.pop().expect("checked")),
            None => bail!("the stack is empty"),
        }
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.stack.last_mut().context("the stack is empty")
    }

    /// Everything above the most recent MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().context("no MARK on the stack")?;
        ensure!(mark <= self.stack.len(), "the stack is shorter than its MARK");
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        let v = self.memo.get(&key).with_context(|| format!("memo entry {key} is not set"))?.clone();
        self.push(v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        ensure!(items.len().is_multiple_of(2), "SETITEMS with an odd number of items");
        let Value::Dict(dict) = self.top()? else { bail!("SETITEM(S) on something that is not a dict") };
        // A key set twice (which torch never writes) stays twice, and so becomes a duplicate name.
        let mut dict = dict.borrow_mut();
        let mut items = items.into_iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            dict.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        let Value::List(list) = self.top()? else { bail!("APPEND(S) on something that is not a list") };
        list.borrow_mut().extend(items);
        Ok(())
    }

    /// Executes one opcode; returns the result at STOP.
    fn step(&mut self, op: u8) -> Result<Option<Value>> {
        match op {
            0x80 => {
                let proto = self.u8()?; // PROTO
                ensure!(proto <= 5, "unknown pickle protocol {proto}");
            }
            0x95 => {
                self.bytes::<8>()?; // FRAME: a hint for buffered readers
            }
            b'.' => {
                // STOP
                let v = self.pop()?;
                ensure!(self.stack.is_empty() && self.marks.is_empty(), "values are left on the stack at STOP");
                return Ok(Some(v));
            }
            b'(' => self.marks.push(self.stack.len()), // MARK
            b'}' => self.push(Value::Dict(Rc::default())),
            b']' => self.push(Value::List(Rc::default())),
            b')' => self.push(Value::Tuple(Rc::default())),
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v.into()))
            }
            b'M' => {
                let v = u16::from_le_bytes(self.bytes()?);
                self.push(Value::Int(v.into()))
            }
            b'J' => {
                let v = i32::from_le_bytes(self.bytes()?);
                self.push(Value::Int(v.into()))
            }
            0x8a => {
                let n = self.u8()?; // LONG1
                let bytes = self.vec(n.into())?;
                self.push(long(&bytes))
            }
            0x8b => {
                let n = self.u32()?; // LONG4
                let bytes = self.vec(n.into())?;
                self.push(long(&bytes))
            }
            b'G' => {
                let v = f64::from_be_bytes(self.bytes()?);
                self.push(Value::Float(v))
            }
            b'X' => {
                let n = self.u32()?; // BINUNICODE
                let s = self.string(n.into())?;
                self.push(Value::Str(s))
            }
            0x8c => {
                let n = self.u8()?; // SHORT_BINUNICODE
                let s = self.string(n.into())?;
                self.push(Value::Str(s))
            }
            0x8d => {
                let n = u64::from_le_bytes(self.bytes()?); // BINUNICODE8
                let s = self.string(n)?;
                self.push(Value::Str(s))
            }
            b'C' => {
                let n = self.u8()?; // SHORT_BINBYTES
                self.vec(n.into())?;
                self.push(Value::Bytes)
            }
            b'B' => {
                let n = self.u32()?; // BINBYTES
                self.vec(n.into())?;
                self.push(Value::Bytes)
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(Rc::new(items)))
            }
            0x85..=0x87 => {
                // TUPLE1 / TUPLE2 / TUPLE3
                let n = usize::from(op - 0x84);
                ensure!(self.stack.len() >= n + self.marks.last().copied().unwrap_or(0), "the stack is too short");
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(Rc::new(items)))
            }
            b'l' => {
                let items = self.pop_mark()?; // LIST
                self.push(Value::List(Rc::new(RefCell::new(items))))
            }
            b'd' => {
                // DICT
                let items = self.pop_mark()?;
                self.push(Value::Dict(Rc::default()));
                self.set_items(items)?;
            }
            b's' => {
                let v = self.pop()?; // SETITEM
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?; // SETITEMS
                self.set_items(items)?;
            }
            b'a' => {
                let v = self.pop()?; // APPEND
                self.append(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?; // APPENDS
                self.append(items)?;
            }
            b'q' => {
                let k = self.u8()?; // BINPUT
                self.memo_put(k.into())?
            }
            b'r' => {
                let k = self.u32()?; // LONG_BINPUT
                self.memo_put(k)?
            }
            0x94 => {
                let k = u32::try_from(self.memo.len()).context("memo overflow")?; // MEMOIZE
                self.memo_put(k)?
            }
            b'h' => {
                let k = self.u8()?; // BINGET
                self.memo_get(k.into())?
            }
            b'j' => {
                let k = self.u32()?; // LONG_BINGET
                self.memo_get(k)?
            }
            b'c' => {
                let module = self.line()?; // GLOBAL
                let name = self.line()?;
                self.push(Value::Global(Global::resolve(&module, &name)?))
            }
            0x93 => {
                // STACK_GLOBAL
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(module), Some(name)) = (module.as_str(), name.as_str()) else {
                    bail!("STACK_GLOBAL needs two strings")
                };
                self.push(Value::Global(Global::resolve(module, name)?))
            }
            b'Q' => {
                let pid = self.pop()?; // BINPERSID
                self.push(persistent_load(&pid)?)
            }
            b'R' => {
                let args = self.pop()?; // REDUCE
                let callable = self.pop()?;
                self.push(reduce(&callable, &args)?)
            }
            0x81 => {
                let args = self.pop()?; // NEWOBJ
                let class = self.pop()?;
                self.push(reduce(&class, &args)?)
            }
            b'b' => {
                // BUILD: the state of an OrderedDict (its `_metadata`) or of a parameter.
                let state = self.pop()?;
                match self.top()? {
                    Value::Dict(_) | Value::Tensor(_) => {}
                    other => bail!("BUILD on {} with state {}", other.kind(), state.kind()),
                }
            }
            _ => bail!("unsupported pickle opcode"),
        }
        Ok(None)
    }
}

/// An integer in little-endian two's complement, as LONG1 / LONG4 store it.
fn long(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt;
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut full = [if negative { 0xff } else { 0 }; 8];
    full[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(full))
}

/// `('storage', <dtype>Storage, key, location, numel[, view_metadata])`.
fn persistent_load(pid: &Value) -> Result<Value> {
    let Value::Tuple(items) = pid else { bail!("persistent id {} is not a tuple", pid.kind()) };
    match &items[..] {
        [Value::Str(tag), Value::Global(Global::StorageType(dtype)), Value::Str(key), Value::Str(_location), Value::Int(_numel), rest @ ..]
            if tag == "storage" && matches!(rest, [] | [Value::None]) =>
        {
            Ok(Value::Storage(Rc::new(Storage { key: key.clone(), dtype: *dtype })))
        }
        _ => bail!("unsupported persistent id (expected ('storage', <type>, key, location, numel))"),
    }
}

fn reduce(callable: &Value, args: &Value) -> Result<Value> {
    let Value::Tuple(args) = args else { bail!("REDUCE arguments are {}, not a tuple", args.kind()) };
    match (callable, &args[..]) {
        (Value::Global(Global::OrderedDict), []) => Ok(Value::Dict(Rc::default())),
        (Value::Global(Global::RebuildTensor), [storage, offset, size, stride, ..]) if args.len() <= 7 => {
            let Value::Storage(storage) = storage else {
                bail!("a tensor is rebuilt from {}, not from a storage", storage.kind())
            };
            let (shape, stride) = (size.usizes("a tensor size")?, stride.usizes("a tensor stride")?);
            ensure!(shape.len() == stride.len(), "size {shape:?} and stride {stride:?} differ in length");
            let offset = offset.usize("a storage offset")?;
            Ok(Value::Tensor(Rc::new(TensorRef { storage: storage.clone(), offset, shape, stride })))
        }
        (Value::Global(Global::RebuildParameter), [tensor @ Value::Tensor(_), ..]) => Ok(tensor.clone()),
        (callable, _) => bail!("cannot call {} with {} arguments", callable.kind(), args.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Value> {
        unpickle(&mut &bytes[..])
    }

    #[test]
    fn memoised_dict_is_shared() {
        // d = {} is memoised, then filled; the memo's copy, fetched afterwards, is filled too.
        let v = run(b"\x80\x02}q\x00\x8c\x01aK\x01sh\x00\x86.").unwrap();
        let Value::Tuple(ref items) = v else { panic!("{v:?}") };
        let [Value::Dict(first), Value::Dict(second)] = &items[..] else { panic!("{items:?}") };
        assert!(Rc::ptr_eq(first, second));
        assert_eq!(second.borrow().len(), 1);
    }

    #[test]
    fn integers_and_strings() {
        let v = run(b"\x80\x02(K\x01M\x00\x01J\xff\xff\xff\xff\x8a\x02\x00\x80\x8c\x02hiG?\xf0\x00\x00\x00\x00\x00\x00t.").unwrap();
        let Value::Tuple(ref items) = v else { panic!() };
        let got: Vec<String> = items.iter().map(Value::kind).collect();
        assert_eq!(got, ["the int 1", "the int 256", "the int -1", "the int -32768", "the string \"hi\"", "the float 1"]);
    }

    #[test]
    fn unknown_global_and_opcode_are_errors() {
        let err = run(b"\x80\x02cos\nsystem\nq\x00.").unwrap_err();
        assert!(format!("{err:#}").contains("unsupported global `os.system`"), "{err:#}");
        let err = run(b"\x80\x02I1\n.").unwrap_err();
        assert!(format!("{err:#}").contains("opcode 0x49 at byte 2"), "{err:#}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00aq\x02K\x01u}b.";
        assert!(run(p).is_ok());
        for n in 0..p.len() {
            assert!(run(&p[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn strided_views_are_gathered() {
        let storage = Rc::new(Storage { key: "0".into(), dtype: Dtype::F32 });
        let bytes: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
        // The transpose of a [3, 4] matrix, and its second row.
        let t = TensorRef { storage: storage.clone(), offset: 0, shape: vec![4, 3], stride: vec![1, 4] };
        assert_eq!(t.gather(&bytes, false).unwrap().data, [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]);
        let row = TensorRef { storage: storage.clone(), offset: 4, shape: vec![4], stride: vec![1] };
        assert_eq!(row.gather(&bytes, false).unwrap().data, [4., 5., 6., 7.]);
        let past = TensorRef { storage, offset: 9, shape: vec![4], stride: vec![1] };
        assert!(format!("{:#}", past.gather(&bytes, false).unwrap_err()).contains("does not fit its storage of 12"));
    }
}
