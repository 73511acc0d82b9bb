//! The identity bank: what frames read from the identity image's trajectory — pre-RoPE
//! keys and values of its image tokens per step and single block, and its attention outputs
//! where frames merge with them.
//!
//! Two strategies fill it. Co-batched: the identity runs in the same batch as the frames,
//! its tensors of the current block are put here and dropped right after use, so only one
//! block's tensors are alive. Stored: an identity-only run keeps what the frames will read
//! (only the steps and layers in use), in half precision, in memory or in a file, so a single
//! frame can be regenerated without recomputing the identity. The control reads both the
//! same way, which is what makes their images equal.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};

use crate::model::dit::RopeTables;

/// Storage of one (step, single block) of the identity.
#[derive(Debug, Clone, Default)]
struct Entry {
    /// Pre-RoPE keys `[H, N_id, D]`.
    k: Option<Tensor>,
    /// Values `[H, N_id, D]`.
    v: Option<Tensor>,
    /// Attention output of the image tokens `[N_id, C]`.
    attn: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub struct IdentityBank {
    /// Dtype tensors are stored in (f32 reproduces the co-batched run exactly).
    storage: DType,
    entries: BTreeMap<(usize, usize), Entry>,
}

impl IdentityBank {
    pub fn new(storage: DType) -> Self {
        Self {
            storage,
            entries: BTreeMap::new(),
        }
    }

    pub fn storage_dtype(&self) -> DType {
        self.storage
    }

    pub fn put_kv(&mut self, step: usize, block: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let e = self.entries.entry((step, block)).or_default();
        e.k = Some(k.to_dtype(self.storage)?.contiguous()?);
        e.v = Some(v.to_dtype(self.storage)?.contiguous()?);
        Ok(())
    }

    pub fn put_attention(&mut self, step: usize, block: usize, out: &Tensor) -> Result<()> {
        self.entries.entry((step, block)).or_default().attn =
            Some(out.to_dtype(self.storage)?.contiguous()?);
        Ok(())
    }

    /// Keys and values, in `dtype` for computing.
    pub fn kv(&self, step: usize, block: usize, dtype: DType) -> Result<Option<(Tensor, Tensor)>> {
        let Some(Entry {
            k: Some(k),
            v: Some(v),
            ..
        }) = self.entries.get(&(step, block))
        else {
            return Ok(None);
        };
        Ok(Some((k.to_dtype(dtype)?, v.to_dtype(dtype)?)))
    }

    pub fn attention(&self, step: usize, block: usize, dtype: DType) -> Result<Option<Tensor>> {
        match self
            .entries
            .get(&(step, block))
            .and_then(|e| e.attn.as_ref())
        {
            Some(t) => Ok(Some(t.to_dtype(dtype)?)),
            None => Ok(None),
        }
    }

    /// Drops everything of one block (co-batched runs keep only the current block).
    pub fn forget(&mut self, step: usize, block: usize) {
        self.entries.remove(&(step, block));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let size = |t: &Option<Tensor>| {
            t.as_ref()
                .map_or(0, |t| t.elem_count() * t.dtype().size_in_bytes())
        };
        self.entries
            .values()
            .map(|e| size(&e.k) + size(&e.v) + size(&e.attn))
            .sum()
    }

    /// Every tensor with its name `"{step}.{block}.{k|v|attn}"`, in (step, block) order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for ((step, block), e) in &self.entries {
            for (name, t) in [("k", &e.k), ("v", &e.v), ("attn", &e.attn)] {
                if let Some(t) = t {
                    out.push((format!("{step}.{block}.{name}"), t.clone()));
                }
            }
        }
        out
    }

    /// The bank from tensors named as [`Self::named_tensors`] names them, stored in
    /// `storage` (tensors of another dtype are converted).
    pub fn from_named_tensors(
        storage: DType,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Result<Self> {
        let mut bank = Self::new(storage);
        for (name, t) in tensors {
            let mut parts = name.splitn(3, '.');
            let (Some(step), Some(block), Some(kind)) = (parts.next(), parts.next(), parts.next())
            else {
                candle_core::bail!("identity bank: unexpected tensor `{name}`");
            };
            let key = (
                step.parse().map_err(candle_core::Error::wrap)?,
                block.parse().map_err(candle_core::Error::wrap)?,
            );
            let t = t.to_dtype(storage)?;
            let e = bank.entries.entry(key).or_default();
            match kind {
                "k" => e.k = Some(t),
                "v" => e.v = Some(t),
                "attn" => e.attn = Some(t),
                _ => candle_core::bail!("identity bank: unexpected tensor `{name}`"),
            }
        }
        Ok(bank)
    }

    /// Writes the bank's tensors to a safetensors file (temp file, then rename). A stored
    /// identity with its masks and fingerprint is written by `StoredIdentity::save`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let map: std::collections::HashMap<String, Tensor> =
            self.named_tensors().into_iter().collect();
        let tmp = path.with_extension("tmp");
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::rename(&tmp, path).map_err(candle_core::Error::wrap)
    }

    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let map = candle_core::safetensors::load(path, device)?;
        let storage = map.values().next().map_or(DType::F32, |t| t.dtype());
        Self::from_named_tensors(storage, map)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))
    }
}

/// RoPE-encodes pre-RoPE keys `[H, E, D]` at the given positions (one per key): CharaConsist
/// eqs. (12)-(13), identity keys moved to the frame positions they matched.
pub fn encode_keys_at(
    k_pre: &Tensor,
    positions: &[[f32; 3]],
    axes_dim: &[usize],
    theta: f64,
) -> Result<Tensor> {
    let tables = RopeTables::from_positions(positions, axes_dim, theta, k_pre.device())?;
    tables.apply(&k_pre.unsqueeze(0)?)?.squeeze(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistency::characonsist::merge::gather_along;
    use crate::model::dit::init::seeded_normal;
    use crate::model::dit::rope::joint_positions;

    #[test]
    fn reencoding_at_own_positions_reproduces_the_rope_keys() -> Result<()> {
        let (axes, theta) = (vec![2usize, 4, 4], 10_000.0);
        let (txt, rows, cols) = (3, 2, 3);
        let pos = joint_positions(txt, rows, cols);
        let k = seeded_normal(1, &[1, 2, pos.len(), 10], &Device::Cpu)?;
        let roped = RopeTables::from_positions(&pos, &axes, theta, &Device::Cpu)?.apply(&k)?;
        // Image tokens 1 and 4, encoded where they already are.
        let img = k.squeeze(0)?.narrow(1, txt, rows * cols)?;
        let picked = gather_along(&img.contiguous()?, 1, &[1, 4])?;
        let again = encode_keys_at(&picked, &[pos[txt + 1], pos[txt + 4]], &axes, theta)?;
        let expect = gather_along(
            &roped
                .squeeze(0)?
                .narrow(1, txt, rows * cols)?
                .contiguous()?,
            1,
            &[1, 4],
        )?;
        let d = (again - expect)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        Ok(())
    }

    #[test]
    fn stored_bank_round_trips_through_a_file() -> Result<()> {
        let mut bank = IdentityBank::new(DType::F16);
        let k = seeded_normal(2, &[2, 5, 4], &Device::Cpu)?;
        bank.put_kv(3, 1, &k, &k)?;
        bank.put_attention(3, 1, &k.flatten_from(1)?)?;
        assert_eq!(bank.bytes(), (40 + 40 + 40) * 2);
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let path = dir.path().join("identity.bank");
        bank.save(&path)?;
        let back = IdentityBank::load(&path, &Device::Cpu)?;
        let (k2, _) = back.kv(3, 1, DType::F32)?.expect("entry present");
        let (k1, _) = bank.kv(3, 1, DType::F32)?.expect("entry present");
        assert_eq!((k1 - k2)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        assert!(back.kv(4, 1, DType::F32)?.is_none());
        Ok(())
    }
}
