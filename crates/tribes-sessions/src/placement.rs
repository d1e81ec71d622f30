//! BackupManager placement: rendezvous (highest random weight) hashing of a session
//! over the members that serve its context. Every node computes the same owners from
//! the same member set, and a member joining or leaving moves only the sessions it
//! wins or held.

use tribes::MemberId;

use crate::id::SessionId;

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub(crate) fn score(member: MemberId, id: SessionId) -> u64 {
    let b = member.as_bytes();
    let lo = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
    mix(mix(lo) ^ mix(hi ^ 0x9e37_79b9_7f4a_7c15) ^ mix(id.hash64()))
}

/// The `k` best-ranked members for `id` among `members`, leaving out `exclude`.
pub(crate) fn top(members: &[MemberId], id: SessionId, k: usize, exclude: Option<MemberId>) -> Vec<MemberId> {
    let mut ranked: Vec<(u64, MemberId)> = members
        .iter()
        .filter(|m| Some(**m) != exclude)
        .map(|&m| (score(m, id), m))
        .collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.dedup_by_key(|x| x.1);
    ranked.into_iter().take(k).map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(i: u8) -> MemberId {
        MemberId::from_bytes([i; 16])
    }

    #[test]
    fn backups_are_stable_and_spread() {
        let all: Vec<MemberId> = (1..=5).map(m).collect();
        let mut counts = [0usize; 6];
        let mut moved = 0;
        for i in 0..10_000u32 {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_le_bytes());
            let id = SessionId::from_bytes(b);
            let owners = top(&all, id, 2, Some(m(1)));
            assert_eq!(owners.len(), 2);
            assert!(!owners.contains(&m(1)));
            assert_eq!(owners, top(&all, id, 2, Some(m(1))));
            for o in &owners {
                counts[o.as_bytes()[0] as usize] += 1;
            }
            // Removing a member moves only the sessions it held.
            let without: Vec<MemberId> = all.iter().copied().filter(|x| *x != m(5)).collect();
            let after = top(&without, id, 2, Some(m(1)));
            if !owners.contains(&m(5)) {
                assert_eq!(after, owners);
            } else {
                moved += 1;
            }
        }
        for c in &counts[2..=5] {
            assert!(*c > 4000 && *c < 6000, "{counts:?}");
        }
        assert!(moved > 4000 && moved < 6000);
    }
}
