//! Named tensors in host memory, read from and written to safetensors files.
//!
//! A [`TensorStore`] is the neutral meeting point of every weight format the project reads
//! (HuggingFace safetensors, our own checkpoints, converted original checkpoints): a sorted map
//! from checkpoint key to shape and values. Floating-point files in f16, bf16 or f64 are widened
//! or narrowed to f32; integer tensors are kept as i64.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::error::WeightError;

/// The values of one stored tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredValues {
    /// Floating-point values (any float dtype in the file, converted to f32).
    F32(Vec<f32>),
    /// Integer or boolean values (converted to i64).
    I64(Vec<i64>),
}

/// One tensor of a [`TensorStore`]: its shape (PyTorch order) and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    /// Dimensions, outermost first, as PyTorch reports them.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: StoredValues,
}

impl StoredTensor {
    /// A float tensor; panics if `values.len()` disagrees with the shape (a programming error).
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape {shape:?} vs {} values",
            values.len()
        );
        Self {
            shape,
            values: StoredValues::F32(values),
        }
    }

    /// An integer tensor; panics if `values.len()` disagrees with the shape (a programming error).
    pub fn i64(shape: Vec<usize>, values: Vec<i64>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape {shape:?} vs {} values",
            values.len()
        );
        Self {
            shape,
            values: StoredValues::I64(values),
        }
    }

    /// The values as f32, or `None` for an integer tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.values {
            StoredValues::F32(v) => Some(v),
            StoredValues::I64(_) => None,
        }
    }

    /// The values as i64, or `None` for a float tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.values {
            StoredValues::I64(v) => Some(v),
            StoredValues::F32(_) => None,
        }
    }
}

/// A sorted map from tensor name to [`StoredTensor`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorStore {
    tensors: BTreeMap<String, StoredTensor>,
}

impl TensorStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every tensor of a safetensors file.
    pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| WeightError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_safetensors_bytes(&bytes).map_err(|e| match e {
            WeightError::Format { message, .. } => WeightError::Format {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Reads the tensors of a PyTorch file (`.pth`, `.pt`, `.ckpt`, zip or legacy pickle).
    /// Checkpoints often nest the weights under a key; `top_level_key` names it, and with
    /// `None` the keys `state_dict` and `model` are tried before the file's top level.
    pub fn read_pytorch(
        path: impl AsRef<Path>,
        top_level_key: Option<&str>,
    ) -> Result<Self, WeightError> {
        use burn_store::pytorch::PytorchReader;
        let path = path.as_ref();
        if !path.exists() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "file not found");
            return Err(WeightError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        let format = |message: String| WeightError::Format {
            path: path.to_path_buf(),
            message,
        };
        let reader = match top_level_key {
            Some(key) => PytorchReader::with_top_level_key(path, key)
                .map_err(|e| format(format!("reading `{key}`: {e}")))?,
            None => ["state_dict", "model"]
                .iter()
                .find_map(|key| {
                    PytorchReader::with_top_level_key(path, key)
                        .ok()
                        .filter(|r| !r.is_empty())
                })
                .map(Ok)
                .unwrap_or_else(|| PytorchReader::new(path).map_err(|e| format(e.to_string())))?,
        };
        let mut store = Self::new();
        for (name, snapshot) in reader.into_tensors() {
            let data = snapshot
                .to_data()
                .map_err(|e| format(format!("tensor `{name}`: {e:?}")))?;
            let shape = data.shape.to_vec();
            let values = if data.dtype.is_float() {
                StoredValues::F32(
                    data.convert::<f32>()
                        .into_vec::<f32>()
                        .map_err(|e| format(format!("tensor `{name}`: {e:?}")))?,
                )
            } else {
                StoredValues::I64(
                    data.convert::<i64>()
                        .into_vec::<i64>()
                        .map_err(|e| format(format!("tensor `{name}`: {e:?}")))?,
                )
            };
            store.tensors.insert(name, StoredTensor { shape, values });
        }
        Ok(store)
    }

    /// Reads a weight file by extension: `.safetensors`, or a PyTorch file (`.pth`, `.pt`,
    /// `.ckpt`, `.bin`) with [`Self::read_pytorch`]'s key search.
    pub fn read_any(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Self::read_safetensors(path),
            Some("pth" | "pt" | "ckpt" | "bin") => Self::read_pytorch(path, None),
            _ => Err(WeightError::Format {
                path: path.to_path_buf(),
                message:
                    "unknown weight file type: expected .safetensors, .pth, .pt, .ckpt or .bin"
                        .into(),
            }),
        }
    }

    /// Parses a safetensors buffer (errors carry an empty path; [`Self::read_safetensors`] fills it).
    pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<Self, WeightError> {
        let format = |message: String| WeightError::Format {
            path: PathBuf::new(),
            message,
        };
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| format(format!("not a safetensors file: {e}")))?;
        let mut store = Self::new();
        for (name, view) in file.tensors() {
            let shape = view.shape().to_vec();
            let values = decode(view.dtype(), view.data()).ok_or_else(|| {
                format(format!(
                    "tensor `{name}` has unsupported dtype {:?}",
                    view.dtype()
                ))
            })?;
            store.tensors.insert(name, StoredTensor { shape, values });
        }
        Ok(store)
    }

    /// Serialises the store (f32 and i64 little-endian) to safetensors bytes.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, WeightError> {
        let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let (dtype, bytes) = match &t.values {
                    StoredValues::F32(v) => {
                        (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                    }
                    StoredValues::I64(v) => {
                        (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                    }
                };
                (name.clone(), dtype, t.shape.clone(), bytes)
            })
            .collect();
        let views = raw
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (name.as_str(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WeightError::Format {
                path: PathBuf::new(),
                message: e.to_string(),
            })?;
        safetensors::serialize(views, None).map_err(|e| WeightError::Format {
            path: PathBuf::new(),
            message: e.to_string(),
        })
    }

    /// Writes the store as a safetensors file atomically (temporary file in the same folder,
    /// flushed, then renamed over `path`), so a crash never leaves a truncated file.
    pub fn write_safetensors(&self, path: impl AsRef<Path>) -> Result<(), WeightError> {
        let bytes = self.to_safetensors_bytes()?;
        write_atomically(path.as_ref(), &bytes)
    }

    /// Adds or replaces a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: StoredTensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// The tensor stored under `name`.
    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.get(name)
    }

    /// Removes and returns the tensor stored under `name`.
    pub fn remove(&mut self, name: &str) -> Option<StoredTensor> {
        self.tensors.remove(name)
    }

    /// Whether a tensor is stored under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// All names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the store holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Renames every key that starts with `from` so that it starts with `to` instead.
    pub fn rename_prefix(&mut self, from: &str, to: &str) {
        let moved: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        for key in moved {
            if let Some(t) = self.tensors.remove(&key) {
                self.tensors
                    .insert(format!("{to}{}", &key[from.len()..]), t);
            }
        }
    }

    /// Consumes the store, yielding `(name, tensor)` pairs in name order.
    pub fn into_iter_sorted(self) -> impl Iterator<Item = (String, StoredTensor)> {
        self.tensors.into_iter()
    }
}

/// The values of a float tensor, row-major, as f32 (reads the tensor back from its device).
pub fn tensor_values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converted to f32 yields f32 values")
}

/// The values of an index tensor (non-negative by construction), read back to the host.
pub fn index_values<B: Backend, const D: usize>(tensor: Tensor<B, D, Int>) -> Vec<usize> {
    tensor
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("an int tensor converted to i64 yields i64 values")
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

impl StoredTensor {
    /// A float tensor's shape and values.
    pub fn from_tensor<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Self {
        let shape = tensor.dims().to_vec();
        Self::f32(shape, tensor_values(tensor))
    }
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WeightError> {
    let io = |source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

fn decode(dtype: Dtype, bytes: &[u8]) -> Option<StoredValues> {
    fn chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        bytes
            .chunks_exact(N)
            .map(|c| c.try_into().expect("chunks_exact yields N bytes"))
    }
    Some(match dtype {
        Dtype::F32 => StoredValues::F32(chunks::<4>(bytes).map(f32::from_le_bytes).collect()),
        Dtype::F64 => StoredValues::F32(
            chunks::<8>(bytes)
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
        ),
        Dtype::F16 => StoredValues::F32(
            chunks::<2>(bytes)
                .map(|b| half::f16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        Dtype::BF16 => StoredValues::F32(
            chunks::<2>(bytes)
                .map(|b| half::bf16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        Dtype::I64 => StoredValues::I64(chunks::<8>(bytes).map(i64::from_le_bytes).collect()),
        Dtype::I32 => StoredValues::I64(
            chunks::<4>(bytes)
                .map(|b| i32::from_le_bytes(b) as i64)
                .collect(),
        ),
        Dtype::I16 => StoredValues::I64(
            chunks::<2>(bytes)
                .map(|b| i16::from_le_bytes(b) as i64)
                .collect(),
        ),
        Dtype::I8 => StoredValues::I64(bytes.iter().map(|&b| b as i8 as i64).collect()),
        Dtype::U8 | Dtype::BOOL => StoredValues::I64(bytes.iter().map(|&b| b as i64).collect()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_keeps_names_shapes_and_values() {
        let mut store = TensorStore::new();
        store.insert(
            "a.weight",
            StoredTensor::f32(vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-7, 9.0]),
        );
        store.insert("ids", StoredTensor::i64(vec![3], vec![0, -1, 1 << 40]));
        let dir = std::env::temp_dir().join(format!("fiber-store-{}", std::process::id()));
        let path = dir.join("w.safetensors");
        store.write_safetensors(&path).unwrap();
        let back = TensorStore::read_safetensors(&path).unwrap();
        assert_eq!(back, store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_a_format_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("fiber-store-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.safetensors");
        std::fs::write(&path, b"definitely not safetensors").unwrap();
        let err = TensorStore::read_safetensors(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn half_precision_is_widened_to_f32() {
        let values = [half::f16::from_f32(1.5), half::f16::from_f32(-0.25)];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F16, vec![2], &bytes).unwrap();
        let buf = safetensors::serialize([("h", view)], None).unwrap();
        let store = TensorStore::from_safetensors_bytes(&buf).unwrap();
        assert_eq!(store.get("h").unwrap().as_f32().unwrap(), &[1.5, -0.25]);
    }
}
