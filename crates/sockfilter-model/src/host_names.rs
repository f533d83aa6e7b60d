//! The DNS names behind remote addresses, learned from the DNS answers the
//! host receives: per network namespace, an address maps to the names whose
//! answers contained it, each until its TTL runs out. The table is bounded
//! ([`HostNames::new`]'s capacity); what it had to drop is counted.
//!
//! ```
//! use sockfilter_model::host_names::HostNames;
//! use std::time::{Duration, UNIX_EPOCH};
//! let mut t = HostNames::new(16);
//! let at = UNIX_EPOCH + Duration::from_secs(100);
//! let ip = "192.0.2.7".parse().unwrap();
//! t.learn(Some(1), ip, "api.example.com", Some(42), at, Duration::from_secs(30));
//! assert_eq!(t.lookup(Some(1), ip, Some(42), at), Some("api.example.com"));
//! assert_eq!(t.lookup(Some(2), ip, Some(42), at), None); // another namespace
//! assert_eq!(t.lookup(Some(1), ip, None, at + Duration::from_secs(31)), None); // expired
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Names kept per address at most: the most recent ones.
pub const NAMES_PER_ADDRESS: usize = 8;

/// A TTL below this counts as this: an answer with TTL 0 (do not cache)
/// is still what the connect right after it was resolved from.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// One name learned for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Learned {
    name: String,
    /// The process whose socket received the answer, when known.
    pid: Option<u32>,
    learned: SystemTime,
    expires: SystemTime,
}

/// Address -> names table. Keys are (network namespace inode, address);
/// namespace None is an answer whose receiving socket's namespace was not
/// known, consulted for every namespace after the namespace's own names.
#[derive(Debug, Default)]
pub struct HostNames {
    by_addr: HashMap<(Option<u64>, IpAddr), Vec<Learned>>,
    entries: usize,
    capacity: usize,
    evicted: u64,
}

impl HostNames {
    /// An empty table holding at most `capacity` (address, name) entries.
    pub fn new(capacity: usize) -> HostNames {
        HostNames {
            capacity: capacity.max(1),
            ..Default::default()
        }
    }

    /// Records that `name` resolved to `addr` at `at`, for `ttl`, in an
    /// answer received by a socket of `pid`. A name already known for the
    /// address is refreshed. When the table is full, expired entries go
    /// first, then the entry that expires soonest (counted in
    /// [`HostNames::evicted`]).
    pub fn learn(
        &mut self,
        netns: Option<u64>,
        addr: IpAddr,
        name: &str,
        pid: Option<u32>,
        at: SystemTime,
        ttl: Duration,
    ) {
        let key = (netns, addr.to_canonical());
        let expires = at + ttl.max(MIN_TTL);
        if let Some(list) = self.by_addr.get_mut(&key) {
            if let Some(l) = list.iter_mut().find(|l| l.name == name && l.pid == pid) {
                l.learned = at;
                l.expires = l.expires.max(expires);
                return;
            }
        }
        if self.entries >= self.capacity {
            self.purge(at);
        }
        if self.entries >= self.capacity {
            self.evict_soonest();
        }
        let list = self.by_addr.entry(key).or_default();
        if list.len() >= NAMES_PER_ADDRESS {
            // the oldest learned name of this address makes room
            if let Some(i) = (0..list.len()).min_by_key(|&i| list[i].learned) {
                list.remove(i);
                self.entries -= 1;
                self.evicted += 1;
            }
        }
        list.push(Learned {
            name: name.to_owned(),
            pid,
            learned: at,
            expires,
        });
        self.entries += 1;
    }

    /// The name of `addr` in `netns` at time `at`: among the names whose
    /// TTL has not run out, the one `pid` itself looked up most recently,
    /// else the one learned most recently; the namespace's own names before
    /// those of unknown namespace.
    pub fn lookup(
        &self,
        netns: Option<u64>,
        addr: IpAddr,
        pid: Option<u32>,
        at: SystemTime,
    ) -> Option<&str> {
        let addr = addr.to_canonical();
        let mut keys = vec![(netns, addr)];
        if netns.is_some() {
            keys.push((None, addr));
        }
        keys.into_iter().find_map(|k| {
            let live = || {
                self.by_addr
                    .get(&k)
                    .into_iter()
                    .flatten()
                    .filter(|l| l.expires > at && l.learned <= at + CLOCK_SLACK)
            };
            let own = pid.and_then(|p| {
                live()
                    .filter(|l| l.pid == Some(p))
                    .max_by_key(|l| l.learned)
            });
            own.or_else(|| live().max_by_key(|l| l.learned))
                .map(|l| l.name.as_str())
        })
    }

    /// Every entry whose TTL has not run out at `at`, oldest learned
    /// first: (namespace, address, name, when its TTL runs out).
    pub fn live(&self, at: SystemTime) -> Vec<(Option<u64>, IpAddr, &str, SystemTime)> {
        let mut v: Vec<(SystemTime, Option<u64>, IpAddr, &str, SystemTime)> = self
            .by_addr
            .iter()
            .flat_map(|(&(ns, ip), list)| {
                list.iter()
                    .filter(move |l| l.expires > at)
                    .map(move |l| (l.learned, ns, ip, l.name.as_str(), l.expires))
            })
            .collect();
        v.sort_by_key(|e| e.0);
        v.into_iter()
            .map(|(_, ns, ip, n, e)| (ns, ip, n, e))
            .collect()
    }

    /// (address, name) entries held now.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Entries dropped before their TTL ran out to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Drops every entry whose TTL ran out before `at`.
    pub fn purge(&mut self, at: SystemTime) {
        let mut removed = 0;
        self.by_addr.retain(|_, list| {
            let before = list.len();
            list.retain(|l| l.expires > at);
            removed += before - list.len();
            !list.is_empty()
        });
        self.entries -= removed;
    }

    fn evict_soonest(&mut self) {
        let soonest = self
            .by_addr
            .iter()
            .flat_map(|(k, list)| {
                list.iter()
                    .enumerate()
                    .map(move |(i, l)| (l.expires, *k, i))
            })
            .min_by_key(|(expires, _, _)| *expires);
        if let Some((_, key, i)) = soonest {
            if let Some(list) = self.by_addr.get_mut(&key) {
                list.remove(i);
                if list.is_empty() {
                    self.by_addr.remove(&key);
                }
            }
            self.entries -= 1;
            self.evicted += 1;
        }
    }
}

/// Events and answers are stamped by the same clock but decoded
/// separately: an answer a few microseconds "after" the event that
/// followed it still counts.
const CLOCK_SLACK: Duration = Duration::from_millis(1);

/// A name in DNS wire format (length-prefixed labels, without the root
/// label) as dotted text, lowercase (DNS names are case-insensitive and
/// resolvers may randomize case). None if the labels do not add up.
///
/// ```
/// use sockfilter_model::host_names::name_from_wire;
/// assert_eq!(name_from_wire(b"\x03API\x07example\x03com").as_deref(), Some("api.example.com"));
/// assert_eq!(name_from_wire(b"\x05abc"), None);
/// ```
pub fn name_from_wire(wire: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(wire.len());
    let mut p = 0;
    while p < wire.len() {
        let len = wire[p] as usize;
        if len == 0 || len > 63 || p + 1 + len > wire.len() {
            return None;
        }
        if !out.is_empty() {
            out.push(b'.');
        }
        out.extend(wire[p + 1..p + 1 + len].iter().map(u8::to_ascii_lowercase));
        p += 1 + len;
    }
    if out.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn the_connecting_process_own_lookup_wins() {
        let mut h = HostNames::new(100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        h.learn(
            Some(1),
            ip,
            "mine.test",
            Some(10),
            t(1),
            Duration::from_secs(60),
        );
        h.learn(
            Some(1),
            ip,
            "theirs.test",
            Some(20),
            t(2),
            Duration::from_secs(60),
        );
        assert_eq!(h.lookup(Some(1), ip, Some(10), t(3)), Some("mine.test"));
        assert_eq!(h.lookup(Some(1), ip, Some(99), t(3)), Some("theirs.test"));
        assert_eq!(h.lookup(Some(1), ip, None, t(3)), Some("theirs.test"));
    }

    #[test]
    fn v4_mapped_and_plain_are_the_same_address() {
        let mut h = HostNames::new(100);
        h.learn(
            None,
            "::ffff:10.0.0.1".parse().unwrap(),
            "a.test",
            None,
            t(1),
            Duration::from_secs(9),
        );
        assert_eq!(
            h.lookup(Some(5), "10.0.0.1".parse().unwrap(), None, t(2)),
            Some("a.test")
        );
    }

    #[test]
    fn bounded_and_counted() {
        let mut h = HostNames::new(3);
        for i in 0..5u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            h.learn(
                None,
                ip,
                "x.test",
                None,
                t(1),
                Duration::from_secs(10 + i as u64),
            );
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.evicted(), 2);
        // the ones expiring soonest went
        assert_eq!(
            h.lookup(None, IpAddr::from([10, 0, 0, 0]), None, t(2)),
            None
        );
        assert_eq!(
            h.lookup(None, IpAddr::from([10, 0, 0, 4]), None, t(2)),
            Some("x.test")
        );
        // expired entries make room without counting as evictions
        h.learn(
            None,
            IpAddr::from([10, 0, 0, 9]),
            "y.test",
            None,
            t(100),
            Duration::from_secs(1),
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h.evicted(), 2);
    }

    #[test]
    fn wire_names() {
        assert_eq!(name_from_wire(b"\x01a\x01b").as_deref(), Some("a.b"));
        assert_eq!(name_from_wire(b""), None);
        assert_eq!(name_from_wire(b"\x00"), None);
    }
}
