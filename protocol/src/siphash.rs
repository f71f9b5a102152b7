//! SipHash-2-4 (Aumasson & Bernstein), keyed, so that a peer cannot craft names whose hashes
//! collide in the open-name table without knowing the table's key.
//!
//! Written out here because the crate has no dependencies beyond its wire helpers and
//! `core::hash::SipHasher` is deprecated; the test checks the reference vectors.

/// A streaming SipHash-2-4 state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SipHasher {
    v: [u64; 4],
    /// Bytes not yet compressed (little-endian, low bytes first).
    tail: u64,
    tail_len: u32,
    total: u64,
}

impl SipHasher {
    pub(crate) fn new(key: [u8; 16]) -> Self {
        let mut k0 = [0; 8];
        let mut k1 = [0; 8];
        k0.copy_from_slice(&key[..8]);
        k1.copy_from_slice(&key[8..]);
        let (k0, k1) = (u64::from_le_bytes(k0), u64::from_le_bytes(k1));
        SipHasher {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            tail_len: 0,
            total: 0,
        }
    }

    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        Self::round(&mut self.v);
        Self::round(&mut self.v);
        self.v[0] ^= m;
    }

    pub(crate) fn write_u8(&mut self, b: u8) {
        self.tail |= u64::from(b) << (8 * self.tail_len);
        self.tail_len += 1;
        self.total += 1;
        if self.tail_len == 8 {
            let m = self.tail;
            self.compress(m);
            self.tail = 0;
            self.tail_len = 0;
        }
    }

    /// The hash of everything written so far; the state is left as it was.
    pub(crate) fn finish(&self) -> u64 {
        let mut s = *self;
        let m = s.tail | ((s.total & 0xff) << 56);
        s.compress(m);
        s.v[2] ^= 0xff;
        for _ in 0..4 {
            Self::round(&mut s.v);
        }
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }
}

#[cfg(test)]
mod tests {
    use super::SipHasher;

    fn hash(key: [u8; 16], data: &[u8]) -> u64 {
        let mut h = SipHasher::new(key);
        data.iter().for_each(|&b| h.write_u8(b));
        h.finish()
    }

    #[test]
    fn reference_vectors() {
        // From the SipHash paper's reference implementation (vectors.h): key 00..0f, messages
        // 00, 00 01, ... of length 0, 1, 7, 8 and 15.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let msg: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(hash(key, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(hash(key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(hash(key, &msg[..7]), 0xab02_00f5_8b01_d137);
        assert_eq!(hash(key, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(hash(key, &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn finish_does_not_consume_the_state() {
        let key = [7; 16];
        let mut h = SipHasher::new(key);
        for &b in b"ab" {
            h.write_u8(b);
        }
        let mid = h.finish();
        assert_eq!(mid, hash(key, b"ab"));
        h.write_u8(b'c');
        assert_eq!(h.finish(), hash(key, b"abc"));
        assert_ne!(hash(key, b"abc"), hash([8; 16], b"abc"));
    }
}
