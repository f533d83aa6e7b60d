//! The DNS answer program (bpf/dns.h) parses packets with bounded loops,
//! which the verifier walks one iteration at a time. It must stay far
//! below the verifier's limit of a million instructions, so that older
//! kernels' verifiers (Debian 12's 6.1, whose pruning is weaker) take it
//! too: this test loads it here and checks what the verifier processed.

use aya::programs::CgroupSkb;
use aya::{Btf, EbpfLoader};

/// A quarter of the verifier's limit.
const BUDGET: u32 = 250_000;

#[test]
fn the_dns_program_is_cheap_to_verify() {
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    let enforce = 1u8;
    for enforced in [false, true] {
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&btf));
        if enforced {
            loader.override_global("cfg_enforce", &enforce, true);
        }
        let mut bpf = loader
            .load(sockfilter::loader::OBJECT)
            .expect("load the object");
        let p: &mut CgroupSkb = bpf
            .program_mut("sf_dns_ingress")
            .expect("sf_dns_ingress in the object")
            .try_into()
            .unwrap();
        p.load().expect("the verifier takes sf_dns_ingress");
        let n = p
            .info()
            .unwrap()
            .verified_instruction_count()
            .expect("kernel reports verified instructions (5.16+)");
        eprintln!(
            "sf_dns_ingress (enforce: {enforced}): {n} instructions processed by the verifier"
        );
        assert!(
            n < BUDGET,
            "the verifier processed {n} instructions (budget {BUDGET})"
        );
    }
}
