//! The 64-bit FNV-1a hash: the checksum of checkpoints and the key of the autotuner's
//! files. Both are written to disk, so its values must never change.

/// The 64-bit FNV-1a hash of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    fnv1a64_extend(OFFSET_BASIS, bytes)
}

/// The FNV-1a hash of the bytes hashed to `hash` followed by `bytes`.
pub fn fnv1a64_extend(hash: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}
