//! Micro-benchmarks of trove's engine through its library API:
//!
//! * `hash`: content-hash throughput, BLAKE3 vs SHA-256, through
//!   `trove::hash::Hasher` on one buffer (default 64 MiB), fed the way
//!   `store::objects::ingest` feeds it (8 MiB blocks for a large file, 256 KiB
//!   blocks for a small-file buffer) and as one update; and from a file,
//!   streamed through a buffer vs memory-mapped.
//! * `tree`: encode/decode of one directory's tree object (default 1,000
//!   entries): postcard encode, zstd frame, unframe, decode (with its checks).
//! * `plan`: the planner on a listing of N entries (default 1,000,000) of
//!   which 1% changed (modified, added, deleted, renamed; `Throughput` =
//!   entries of the new listing), plus the all-unchanged case.
//!
//! Sizes: `TROVE_BENCH_PLAN_ENTRIES` (planner entries), `TROVE_BENCH_HASH_MIB`,
//! `TROVE_BENCH_TREE_ENTRIES`. Run: `cargo bench --bench engine`
//! (add `-- plan` to run one group). Takes a few minutes as shipped; the
//! planner group alone needs about 1.5 GiB of memory at 1M entries (two
//! listings plus the copy each iteration consumes).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use trove::hash::Hasher;
use trove::id::{Digest, HashAlgo, ObjectId};
use trove::model::{Entry, Item, Leaf, Meta};
use trove::pathbytes::cmp_paths;
use trove::plan::{plan, PlanOptions};
use trove::repo::tree::{decode_tree, encode_tree, frame_tree, unframe_tree, Node, TreeObject};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A small deterministic PRNG (xorshift64*), so inputs never depend on a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn digest(&mut self) -> Digest {
        let mut d = [0u8; 32];
        for c in d.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        Digest(d)
    }
}

fn meta(rng: &mut Rng) -> Meta {
    Meta {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime_ns: 1_704_067_200_000_000_000 + rng.below(1 << 40) as i64,
        xattrs: Default::default(),
    }
}

fn file(rng: &mut Rng) -> Leaf {
    Leaf::File {
        size: 1 + rng.below(16 << 10),
        id: ObjectId(rng.digest()),
        dup: false,
        meta: meta(rng),
        ext: Default::default(),
    }
}

fn bench_hash(c: &mut Criterion) {
    let mib = env_usize("TROVE_BENCH_HASH_MIB", 64);
    let len = mib << 20;
    let mut rng = Rng(0x5eed);
    let mut buf = vec![0u8; len];
    for chunk in buf.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(len as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    let cases: [(&str, HashAlgo, usize); 5] = [
        ("blake3/one-update", HashAlgo::Blake3, len),
        ("blake3/8MiB-blocks", HashAlgo::Blake3, 8 << 20),
        ("blake3/256KiB-blocks", HashAlgo::Blake3, 256 << 10),
        ("sha256/8MiB-blocks", HashAlgo::Sha256, 8 << 20),
        ("sha256/256KiB-blocks", HashAlgo::Sha256, 256 << 10),
    ];
    for (name, algo, block) in cases {
        g.bench_function(format!("{name}/{mib}MiB"), |b| {
            b.iter(|| {
                let mut h = Hasher::new(algo);
                for c in buf.chunks(block) {
                    h.update(c);
                }
                black_box(h.finish())
            })
        });
    }
    // From a file (page cache warm): streamed through a buffer, as both a
    // backup and verify read (objects are never mapped: a hardlink in the
    // browsable tree can be truncated under the reader).
    let dir = std::env::temp_dir().join(format!("trove-bench-hash-{}", std::process::id()));
    let file = dir.join("data");
    if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&file, &buf).is_ok() {
        g.bench_function(format!("blake3/file-streamed/{mib}MiB"), |b| {
            b.iter(|| {
                let f = std::fs::File::open(&file).expect("bench file");
                black_box(
                    trove::hash::hash_reader(HashAlgo::Blake3, f, 1 << 20, &file).expect("hash"),
                )
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One directory: mostly files, every 20th entry a subdirectory.
fn tree_object(n: usize) -> TreeObject<Leaf, Meta> {
    let mut rng = Rng(0x7e3e);
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let dir = i % 20 == 7;
        let name = if dir {
            format!("subdir_{i:05}").into_bytes()
        } else {
            format!("file-{i:05}-{}.txt", rng.below(100_000)).into_bytes()
        };
        entries.push(Node {
            name,
            leaf: if dir { None } else { Some(file(&mut rng)) },
            dir: if dir {
                Some((trove::id::TreeId(rng.digest()), meta(&mut rng)))
            } else {
                None
            },
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    TreeObject { entries }
}

fn bench_tree(c: &mut Criterion) {
    let n = env_usize("TROVE_BENCH_TREE_ENTRIES", 1000);
    let t = tree_object(n);
    let payload = encode_tree(&t).expect("encode");
    let framed = frame_tree(&payload).expect("frame");
    let path = Path::new("bench-tree");
    let mut g = c.benchmark_group("tree");
    g.throughput(Throughput::Elements(n as u64));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function(format!("encode/{n}"), |b| {
        b.iter(|| black_box(encode_tree(black_box(&t)).expect("encode")))
    });
    g.bench_function(format!("frame(zstd-3)/{n}"), |b| {
        b.iter(|| black_box(frame_tree(black_box(&payload)).expect("frame")))
    });
    g.bench_function(format!("unframe/{n}"), |b| {
        b.iter(|| black_box(unframe_tree(black_box(&framed), path).expect("unframe")))
    });
    g.bench_function(format!("decode/{n}"), |b| {
        b.iter(|| black_box(decode_tree::<Leaf, Meta>(black_box(&payload), path).expect("decode")))
    });
    g.bench_function(format!("encode+frame+unframe+decode/{n}"), |b| {
        b.iter(|| {
            let p = encode_tree(black_box(&t)).expect("encode");
            let f = frame_tree(&p).expect("frame");
            let u = unframe_tree(&f, path).expect("unframe");
            black_box(decode_tree::<Leaf, Meta>(&u.payload, path).expect("decode"))
        })
    });
    g.finish();
    eprintln!(
        "tree: {n} entries: {} bytes encoded, {} bytes framed",
        payload.len(),
        framed.len()
    );
}

/// A sorted source listing of about `n` files, ~33 entries per directory,
/// three levels of directories.
fn listing(n: usize, rng: &mut Rng) -> Vec<Entry> {
    let mut out = Vec::with_capacity(n + n / 30);
    let per_dir = 33;
    let dirs = n.div_ceil(per_dir);
    let fan = (dirs as f64).cbrt().ceil() as usize;
    let mut files = 0;
    'outer: for a in 0..fan {
        let pa = format!("dir_{a:03}");
        out.push(Entry {
            path: pa.clone().into_bytes(),
            item: Item::Dir(meta(rng)),
        });
        for b in 0..fan {
            let pb = format!("{pa}/sub_{b:03}");
            out.push(Entry {
                path: pb.clone().into_bytes(),
                item: Item::Dir(meta(rng)),
            });
            for c in 0..fan {
                let pc = format!("{pb}/leaf_{c:03}");
                out.push(Entry {
                    path: pc.clone().into_bytes(),
                    item: Item::Dir(meta(rng)),
                });
                for f in 0..per_dir {
                    out.push(Entry {
                        path: format!("{pc}/file-{f:03}.dat").into_bytes(),
                        item: Item::Leaf(file(rng)),
                    });
                    files += 1;
                    if files == n {
                        break 'outer;
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    out
}

fn with_content(e: &Entry, id: ObjectId, size: u64) -> Entry {
    let mut e = e.clone();
    if let Item::Leaf(Leaf::File { id: i, size: s, .. }) = &mut e.item {
        *i = id;
        *s = size;
    }
    e
}

/// The previous listing and a current one with 1% of the files modified,
/// 1% deleted, 1% renamed (same content, new name) and 1% added.
fn changed(prev: &[Entry], rng: &mut Rng) -> Vec<Entry> {
    let mut cur = Vec::with_capacity(prev.len() + prev.len() / 100);
    for e in prev {
        let Item::Leaf(Leaf::File { id, size, .. }) = &e.item else {
            cur.push(e.clone());
            continue;
        };
        match rng.below(100) {
            0 => cur.push(with_content(e, ObjectId(rng.digest()), *size + 1)),
            1 => {}
            2 => {
                let mut r = with_content(e, *id, *size);
                r.path.extend_from_slice(b".renamed");
                cur.push(r);
            }
            3 => {
                cur.push(e.clone());
                let mut n = with_content(e, ObjectId(rng.digest()), 100);
                n.path.extend_from_slice(b".new");
                cur.push(n);
            }
            _ => cur.push(e.clone()),
        }
    }
    cur.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    cur
}

fn bench_plan(c: &mut Criterion) {
    let n = env_usize("TROVE_BENCH_PLAN_ENTRIES", 1_000_000);
    let mut rng = Rng(0x91a7);
    let prev = listing(n, &mut rng);
    let cur = changed(&prev, &mut rng);
    let opts = PlanOptions {
        max_versions: 10,
        deleted_max_age_ns: None,
        now_ns: 1_800_000_000_000_000_000,
    };
    // Sanity: the planner sees the intended amount of change.
    let p = plan(&prev, &[], cur.clone(), &opts);
    eprintln!(
        "plan: {} entries before, {} after; {} modified, {} deleted, {} new ({} duplicates), {} unchanged",
        prev.len(),
        cur.len(),
        p.counts.modified,
        p.counts.deleted,
        p.counts.backed_up + p.counts.duplicates,
        p.counts.duplicates,
        p.counts.unchanged
    );
    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(cur.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function(format!("1pct-changed/{n}"), |b| {
        b.iter_batched(
            || cur.clone(),
            |cur| black_box(plan(black_box(&prev), &[], cur, &opts)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function(format!("unchanged/{n}"), |b| {
        b.iter_batched(
            || prev.clone(),
            |cur| black_box(plan(black_box(&prev), &[], cur, &opts)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_hash, bench_tree, bench_plan);
criterion_main!(benches);
