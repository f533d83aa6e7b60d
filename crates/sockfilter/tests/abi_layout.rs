//! bpf/sockfilter.h and src/abi.rs must describe the same bytes. A C
//! compiler prints the header's sizes and offsets; Rust's `offset_of!` must
//! agree field by field.

use sockfilter::abi::policy::{
    SfBitmap, SfBitmapKey, SfCommKey, SfDnsAddr, SfDnsAddrKey, SfExeKey, SfHostKey, SfPolicyMeta,
    SfU64Key,
};
use sockfilter::abi::{
    SfDnsAnswer, SfEvent, SfExe, SfExec, SfListenKey, SfListener, SfOwner, SfProc,
};
use std::mem::{offset_of, size_of};
use std::process::Command;

macro_rules! fields {
    ($ty:ty, $cty:literal, $($f:ident),+) => {
        vec![
            (format!("sizeof {}", $cty), size_of::<$ty>()),
            $((format!("{}.{}", $cty, stringify!($f)), offset_of!($ty, $f)),)+
        ]
    };
}

#[test]
fn rust_mirror_matches_the_c_header() {
    let mut rust = fields!(
        SfEvent,
        "sf_event",
        ts_ns,
        cookie,
        listener_cookie,
        cgroup_id,
        bytes_sent,
        bytes_received,
        duration_ns,
        kind,
        flags,
        pid,
        uid,
        backlog,
        netns,
        family,
        protocol,
        local_port,
        remote_port,
        local_addr,
        remote_addr,
        comm,
        exe_len,
        suppressed,
        ppid,
        exec_id,
        parent_exec_id,
        exe
    );
    rust.extend(fields!(
        SfExe,
        "sf_exe",
        len,
        truncated,
        ino,
        dev,
        ppid,
        exec_id,
        parent_exec_id,
        path
    ));
    rust.extend(fields!(
        SfExec,
        "sf_exec",
        exec_id,
        pid,
        exe_len,
        args_len,
        args_truncated,
        exe,
        args
    ));
    rust.extend(fields!(SfProc, "sf_proc", cgroup_id, pid, uid, comm));
    rust.extend(fields!(SfListenKey, "sf_listen_key", netns, addr, port));
    rust.extend(fields!(
        SfListener,
        "sf_listener",
        cookie,
        owner,
        cgroups,
        ncgroups,
        netns_inum,
        denied,
        reported,
        window_ns,
        suppressed
    ));
    rust.extend(fields!(
        SfOwner, "sf_owner", proc, start_ns, active, pending, verdict, slot, udp_next, rule,
        udp_dst, netns
    ));
    rust.extend(fields!(
        SfDnsAnswer,
        "sf_dns_answer",
        magic,
        ts_ns,
        netns,
        pid,
        naddrs,
        name_len,
        ttl,
        family,
        addr,
        name
    ));
    rust.extend(fields!(SfBitmap, "sf_bitmap", summary, words));
    rust.extend(fields!(SfBitmapKey, "sf_bitmap_key", slot, id));
    rust.extend(fields!(
        SfPolicyMeta,
        "sf_policy_meta",
        words,
        rules,
        default_verdict,
        dims_used,
        wild,
        generation
    ));
    rust.extend(fields!(SfExeKey, "sf_exe_key", slot, dev, ino));
    rust.extend(fields!(SfHostKey, "sf_host_key", slot, below, len, name));
    rust.extend(fields!(SfDnsAddrKey, "sf_dns_addr_key", netns, addr));
    rust.extend(fields!(
        SfDnsAddr,
        "sf_dns_addr",
        expires_ns,
        id,
        generation
    ));
    rust.extend(fields!(SfCommKey, "sf_comm_key", slot, comm));
    rust.extend(fields!(SfU64Key, "sf_u64_key", slot, value));
    // sf_ip_key is prefixlen (u32) followed by the packed data aya appends.
    rust.push((
        "sizeof sf_ip_key".into(),
        4 + size_of::<sockfilter::abi::policy::SfIpKeyData>(),
    ));

    let dir = std::env::temp_dir().join(format!("sf-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let header = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bpf/sockfilter.h");
    let mut c = format!(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include \"{header}\"\nint main(void){{\n"
    );
    for (name, _) in &rust {
        let expr = match name.split_once(' ') {
            Some(("sizeof", ty)) => format!("sizeof(struct {ty})"),
            _ => {
                let (ty, field) = name.split_once('.').unwrap();
                format!("offsetof(struct {ty}, {field})")
            }
        };
        c.push_str(&format!("printf(\"%zu\\n\", (size_t){expr});\n"));
    }
    c.push_str("return 0;}\n");
    let src = dir.join("layout.c");
    let bin = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let st = Command::new("cc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("a C compiler (cc)");
    assert!(st.success(), "compiling the layout probe failed");
    let out = Command::new(&bin).output().unwrap();
    let c_values: Vec<usize> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(c_values.len(), rust.len());
    for ((name, r), c) in rust.iter().zip(c_values) {
        assert_eq!(*r, c, "{name}: Rust says {r}, C says {c}");
    }
}
