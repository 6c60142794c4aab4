//! Which packs `verify --remote --read-data-subset SPEC` reads (restic's
//! flag and forms): a deterministic slice `N/T`, a random share `P%`, or
//! random packs up to a total `SIZE`. Pure: the spec is parsed here and
//! the choice is a function of the packs, the spec and a seed.
//!
//! A pack's slice is a function of its name alone (the name is the BLAKE3
//! of its bytes, so uniformly spread): `u64::from_le_bytes(name[..8]) mod
//! T + 1`. Packs are never rewritten under the same name, so a pack keeps
//! its slice as others are added, and the T slices together hold every
//! pack exactly once.

use super::index::PackInfo;
use std::fmt;

/// The largest T of `N/T`.
pub const MAX_SLICES: u32 = 10_000;

/// A `--read-data-subset` spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// The `n`-th (1-based) of `of` name-based slices.
    Slice { n: u32, of: u32 },
    /// This share of the packs (0 < P ≤ 100), chosen by the seed.
    Percent(f64),
    /// Packs chosen by the seed until their total size reaches this many
    /// bytes (the last one may go over).
    Size(u64),
}

/// What every rejected spec says after its own reason.
const FORMS: &str = "accepted forms: N/T (the N-th of T slices, 1 <= N <= T <= 10000, e.g. 3/30), P% (a share of the packs, 0 < P <= 100, e.g. 5% or 2.5%), SIZE (packs up to a total size, with a unit K, M, G or T (powers of 1024) or B, e.g. 500M or 2G)";

impl Subset {
    /// Parse `N/T`, `P%` or `SIZE`. The error names the value and the
    /// three accepted forms.
    pub fn parse(s: &str) -> Result<Subset, String> {
        let bad = |why: &str| format!("{s:?}: {why}; {FORMS}");
        if let Some((n, t)) = s.split_once('/') {
            let num = |x: &str| -> Option<u32> {
                if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) {
                    x.parse().ok()
                } else {
                    None
                }
            };
            return match (num(n), num(t)) {
                (Some(n), Some(of)) if n >= 1 && n <= of && of <= MAX_SLICES => {
                    Ok(Subset::Slice { n, of })
                }
                (Some(_), Some(_)) => Err(bad("a slice N/T needs 1 <= N <= T <= 10000")),
                _ => Err(bad("not a slice N/T of two whole numbers")),
            };
        }
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad("not a percentage"))?;
            return if v.is_finite() && v > 0.0 && v <= 100.0 {
                Ok(Subset::Percent(v))
            } else {
                Err(bad("a share must be above 0% and at most 100%"))
            };
        }
        // A size needs its unit: a bare number could as well be meant as a
        // slice or a share.
        let t = s.trim();
        if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad(
                "a bare number is ambiguous (write N/T, P% or a size with its unit)",
            ));
        }
        match crate::config::parse_size(t) {
            Ok(0) => Err(bad("a size must be above 0")),
            Ok(v) => Ok(Subset::Size(v)),
            Err(_) => Err(bad("not a slice, a share or a size")),
        }
    }

    /// Whether the choice depends on a seed (a share or a size does; a
    /// slice is fixed by the pack names).
    pub fn is_random(&self) -> bool {
        !matches!(self, Subset::Slice { .. })
    }
}

impl fmt::Display for Subset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Subset::Slice { n, of } => write!(f, "{n}/{of}"),
            Subset::Percent(p) => write!(f, "{p}%"),
            Subset::Size(b) => {
                // The largest unit that divides it, so `2G` stays `2G`.
                let unit = [(40, "T"), (30, "G"), (20, "M"), (10, "K")]
                    .into_iter()
                    .find(|(sh, _)| b % (1u64 << sh) == 0);
                match unit {
                    Some((sh, u)) => write!(f, "{}{u}", b >> sh),
                    None => write!(f, "{b}B"),
                }
            }
        }
    }
}

/// The slice (1-based, of `of`) a pack named `name` belongs to.
pub fn slice_of(name: &[u8; 32], of: u32) -> u32 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&name[..8]);
    (u64::from_le_bytes(b) % u64::from(of.max(1))) as u32 + 1
}

/// The packs of `packs` that `subset` reads, sorted by name. `seed` orders
/// the packs for a share or a size (the seeded hash `--sample` uses, so a
/// seed repeats a choice exactly); a slice ignores it.
pub fn select(packs: &[PackInfo], subset: &Subset, seed: u64) -> Vec<PackInfo> {
    let mut chosen: Vec<PackInfo> = match *subset {
        Subset::Slice { n, of } => packs
            .iter()
            .filter(|p| slice_of(&p.name, of) == n)
            .cloned()
            .collect(),
        Subset::Percent(pct) => {
            // restic's count: the share rounded, at least one pack.
            let total = packs.len();
            let want = ((total as f64) * pct / 100.0).round() as usize;
            let want = want.clamp(usize::from(total > 0), total);
            ranked(packs, seed).into_iter().take(want).collect()
        }
        Subset::Size(limit) => {
            let mut sum = 0u64;
            ranked(packs, seed)
                .into_iter()
                .take_while(|p| {
                    let more = sum < limit;
                    sum = sum.saturating_add(p.len);
                    more
                })
                .collect()
        }
    };
    chosen.sort_by_key(|p| p.name);
    chosen
}

/// `packs` in the seed's pseudo-random order.
fn ranked(packs: &[PackInfo], seed: u64) -> Vec<PackInfo> {
    let mut r: Vec<(u64, PackInfo)> = packs
        .iter()
        .map(|p| (crate::verify::sample_rank(seed, &p.name), p.clone()))
        .collect();
    r.sort_by_key(|(rank, p)| (*rank, p.name));
    r.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::pack::PackKind;

    fn packs(n: usize) -> Vec<PackInfo> {
        (0..n)
            .map(|i| PackInfo {
                name: *blake3::hash(&(i as u64).to_le_bytes()).as_bytes(),
                kind: if i % 5 == 0 {
                    PackKind::Tree
                } else {
                    PackKind::Data
                },
                len: 1000 + i as u64,
            })
            .collect()
    }

    #[test]
    fn subset_specs_parse_to_their_forms_and_print_back() {
        let cases: &[(&str, Subset, &str)] = &[
            ("1/3", Subset::Slice { n: 1, of: 3 }, "1/3"),
            ("30/30", Subset::Slice { n: 30, of: 30 }, "30/30"),
            ("1/10000", Subset::Slice { n: 1, of: 10000 }, "1/10000"),
            ("5%", Subset::Percent(5.0), "5%"),
            ("2.5%", Subset::Percent(2.5), "2.5%"),
            ("100%", Subset::Percent(100.0), "100%"),
            ("500M", Subset::Size(500 << 20), "500M"),
            ("2G", Subset::Size(2 << 30), "2G"),
            ("1.5M", Subset::Size(3 << 19), "1536K"),
            ("4096B", Subset::Size(4096), "4K"),
            ("1000b", Subset::Size(1000), "1000B"),
            ("1T", Subset::Size(1 << 40), "1T"),
        ];
        for (s, want, back) in cases {
            assert_eq!(Subset::parse(s).as_ref(), Ok(want), "{s}");
            assert_eq!(want.to_string(), *back, "{s}");
        }
    }

    #[test]
    fn subset_bad_specs_name_the_value_and_the_three_forms() {
        for s in [
            "0/3", "4/3", "3", "0%", "1X", "", "1/0", "1/10001", "/3", "1/", "a/b", "-1/3", "101%",
            "-5%", "nan%", "inf%", "%", "0M", "0", "1.5", "M", "1/2/3",
        ] {
            let Err(e) = Subset::parse(s) else {
                panic!("{s:?} accepted");
            };
            assert!(e.contains(&format!("{s:?}")), "{e}");
            assert!(
                e.contains("N/T") && e.contains("P%") && e.contains("SIZE"),
                "{e}"
            );
        }
    }

    #[test]
    fn subset_slices_partition_the_packs_and_keep_their_members_as_packs_are_added() {
        let all = packs(500);
        let grown = packs(800);
        for of in [1, 2, 3, 7, 30] {
            let mut seen: Vec<[u8; 32]> = Vec::new();
            for n in 1..=of {
                let s = select(&all, &Subset::Slice { n, of }, 0);
                // A slice does not depend on the seed.
                assert_eq!(s, select(&all, &Subset::Slice { n, of }, 99));
                seen.extend(s.iter().map(|p| p.name));
                // Adding packs never moves one out of its slice.
                let more = select(&grown, &Subset::Slice { n, of }, 0);
                assert!(s.iter().all(|p| more.iter().any(|q| q.name == p.name)));
            }
            seen.sort();
            let mut want: Vec<[u8; 32]> = all.iter().map(|p| p.name).collect();
            want.sort();
            assert_eq!(seen, want, "the {of} slices together hold every pack once");
        }
        // Roughly even: 500 packs in 3 slices.
        for n in 1..=3 {
            let k = select(&all, &Subset::Slice { n, of: 3 }, 0).len();
            assert!((120..=215).contains(&k), "slice {n}/3 holds {k}");
        }
    }

    #[test]
    fn subset_slice_is_the_first_eight_name_bytes_little_endian() {
        let mut name = [0u8; 32];
        name[0] = 7;
        assert_eq!(slice_of(&name, 3), 7 % 3 + 1);
        name[1] = 1; // 263
        assert_eq!(slice_of(&name, 30), 263 % 30 + 1);
        name[8] = 0xff; // beyond the first eight bytes: no effect
        assert_eq!(slice_of(&name, 30), 263 % 30 + 1);
        assert_eq!(slice_of(&[0xff; 32], 10000), (u64::MAX % 10000) as u32 + 1);
    }

    #[test]
    fn subset_share_reads_the_rounded_count_at_least_one_repeatably() {
        let all = packs(40);
        let cases: &[(f64, usize)] = &[
            (10.0, 4),
            (100.0, 40),
            (1.0, 1),
            (0.1, 1),
            (50.0, 20),
            (2.5, 1),
            (3.75, 2),
        ];
        for &(pct, want) in cases {
            let a = select(&all, &Subset::Percent(pct), 5);
            assert_eq!(a.len(), want, "{pct}%");
            assert_eq!(a, select(&all, &Subset::Percent(pct), 5), "same seed");
        }
        // Another seed, another choice; a smaller share of one seed is
        // part of a larger one (one ranking).
        assert_ne!(
            select(&all, &Subset::Percent(10.0), 5),
            select(&all, &Subset::Percent(10.0), 6)
        );
        let small = select(&all, &Subset::Percent(10.0), 5);
        let large = select(&all, &Subset::Percent(50.0), 5);
        assert!(small.iter().all(|p| large.contains(p)));
        assert!(select(&[], &Subset::Percent(10.0), 5).is_empty());
    }

    #[test]
    fn subset_size_reaches_the_limit_and_never_more_than_one_pack_over() {
        let all = packs(40);
        let total: u64 = all.iter().map(|p| p.len).sum();
        for limit in [
            1,
            999,
            1000,
            5000,
            12_345,
            total - 1,
            total,
            total + 1,
            u64::MAX,
        ] {
            let s = select(&all, &Subset::Size(limit), 3);
            let sum: u64 = s.iter().map(|p| p.len).sum();
            if limit <= total {
                assert!(sum >= limit, "{limit}: {sum}");
            } else {
                assert_eq!(s.len(), all.len());
            }
            // The packs taken are the first of the seed's order, and all
            // but the last were still under the limit.
            let order = ranked(&all, 3);
            let mut first: Vec<PackInfo> = order[..s.len()].to_vec();
            first.sort_by_key(|p| p.name);
            assert_eq!(s, first);
            let before: u64 = order[..s.len() - 1].iter().map(|p| p.len).sum();
            assert!(before < limit, "{limit}: {sum} is more than one pack over");
        }
        assert!(select(&[], &Subset::Size(1 << 20), 3).is_empty());
    }
}
