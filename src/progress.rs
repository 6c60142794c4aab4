//! Progress reporting as a trait, so the engine never prints: the CLI
//! plugs in a terminal progress bar, tests and pipes get [`NoProgress`].

pub trait Progress: Sync {
    /// A new phase begins (`total_bytes` may be 0 when unknown).
    fn phase(&self, _name: &str, _total_items: u64, _total_bytes: u64) {}
    /// Work done since the last call.
    fn advance(&self, _items: u64, _bytes: u64) {}
    /// The phase ended.
    fn finish(&self) {}
}

pub struct NoProgress;

impl Progress for NoProgress {}
