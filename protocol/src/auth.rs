//! Mutual proof of a pre-shared key, without an extra round trip (PROTOCOL.md §2.5).
//!
//! Each side contributes a fresh nonce (the sender in the hello, the receiver in the accept).
//! The receiver proves the key in the accept: a MAC over the hello and the accept up to the
//! proof field. The sender proves it in its first control message (`Auth`): a MAC over the
//! hello and the whole accept. Both MACs cover both nonces and every agreed parameter, so
//! neither proof can be replayed on another connection or with other parameters.
//!
//! The MAC itself is computed outside this crate (the driver uses keyed BLAKE3), through
//! [`Mac`]; the protocol only orders the steps and carries the bytes.

use crate::wire::PROOF_LEN;

/// A keyed MAC over the concatenation of `parts`, with a 32-byte output.
pub trait Mac {
    /// MAC of `parts[0] ‖ parts[1] ‖ …`.
    fn mac(&self, parts: &[&[u8]]) -> [u8; PROOF_LEN];
}

impl<M: Mac + ?Sized> Mac for &M {
    fn mac(&self, parts: &[&[u8]]) -> [u8; PROOF_LEN] {
        (**self).mac(parts)
    }
}

/// Domain label of the receiver's proof.
pub const RECEIVER_LABEL: &[u8] = b"rdmaft v2 receiver proof";
/// Domain label of the sender's proof.
pub const SENDER_LABEL: &[u8] = b"rdmaft v2 sender proof";

/// The receiver's proof: MAC(label ‖ hello ‖ accept bytes before the proof field).
pub(crate) fn receiver_proof(mac: &dyn Mac, hello: &[u8], accept_head: &[u8]) -> [u8; PROOF_LEN] {
    mac.mac(&[RECEIVER_LABEL, hello, accept_head])
}

/// The sender's proof: MAC(label ‖ hello ‖ the whole accept).
pub(crate) fn sender_proof(mac: &dyn Mac, hello: &[u8], accept: &[u8]) -> [u8; PROOF_LEN] {
    mac.mac(&[SENDER_LABEL, hello, accept])
}

/// Compares two proofs in time independent of where they differ.
pub(crate) fn proofs_equal(a: &[u8; PROOF_LEN], b: &[u8; PROOF_LEN]) -> bool {
    // spec: [psk.sender-proof]
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a MAC, but keyed and order-sensitive: enough to test the plumbing.
    struct Toy(u8);

    impl Mac for Toy {
        fn mac(&self, parts: &[&[u8]]) -> [u8; PROOF_LEN] {
            let mut out = [self.0; PROOF_LEN];
            for (i, b) in parts.iter().flat_map(|p| p.iter()).enumerate() {
                out[i % PROOF_LEN] = out[i % PROOF_LEN].rotate_left(3) ^ b;
            }
            out
        }
    }

    #[test]
    fn proofs_differ_by_role_key_and_transcript() {
        let k = Toy(1);
        let r = receiver_proof(&k, b"hello", b"accept");
        assert_ne!(
            r,
            sender_proof(&k, b"hello", b"accept"),
            "labels separate roles"
        );
        assert_ne!(r, receiver_proof(&Toy(2), b"hello", b"accept"), "keyed");
        let s = sender_proof(&k, b"hello", b"accept");
        assert_ne!(
            s,
            sender_proof(&Toy(2), b"hello", b"accept"),
            "sender's keyed"
        );
        assert_ne!(
            s,
            sender_proof(&k, b"hello", b"accepu"),
            "covers the accept"
        );
        assert_eq!(
            s,
            k.mac(&[SENDER_LABEL, b"hello", b"accept"]),
            "as specified"
        );
        assert_eq!(
            r,
            k.mac(&[RECEIVER_LABEL, b"hello", b"accept"]),
            "as specified"
        );
        assert_ne!(
            r,
            receiver_proof(&k, b"hellp", b"accept"),
            "covers the hello"
        );
        assert_eq!(
            r,
            receiver_proof(&&k, b"hello", b"accept"),
            "&M is a Mac too"
        );
    }

    #[test]
    // spec-test: [psk.sender-proof]
    fn comparison_is_exact() {
        let a = [7u8; PROOF_LEN];
        let mut b = a;
        assert!(proofs_equal(&a, &b));
        b[31] ^= 1;
        assert!(!proofs_equal(&a, &b));
        b = a;
        b[0] = 0;
        assert!(!proofs_equal(&a, &b));
    }
}
