//! Known answers and round trips of every address form.

use super::*;
use std::net::SocketAddr;
use std::path::PathBuf;

#[test]
fn template_port_2761_known_answer() {
    let id = ServiceId::from_vsock_port(2761);
    assert_eq!(id.to_string(), "00000ac9-facb-11e6-bd58-64006a7986d3");
    assert_eq!(
        id.to_bytes_le(),
        [
            0xc9, 0x0a, 0x00, 0x00, 0xcb, 0xfa, 0xe6, 0x11, 0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79,
            0x86, 0xd3
        ]
    );
    assert_eq!(id.vsock_port(), Some(2761));
    // Linux reads the port back as the first four bytes, little-endian.
    let b = id.to_bytes_le();
    assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), 2761);
}

#[test]
fn template_edges() {
    assert_eq!(ServiceId::VSOCK_TEMPLATE.vsock_port(), Some(0));
    assert_eq!(
        ServiceId::from_vsock_port(u32::MAX).vsock_port(),
        Some(u32::MAX)
    );
    assert_eq!(
        ServiceId::from_vsock_port(u32::MAX).to_string(),
        "ffffffff-facb-11e6-bd58-64006a7986d3"
    );
    // One bit off in the tail: not a template id.
    let not = ServiceId::from_u128(ServiceId::VSOCK_TEMPLATE.as_uuid().as_u128() ^ 1);
    assert_eq!(not.vsock_port(), None);
    assert_eq!(
        "5a7e3e8d-2c1b-4d3e-9f00-112233445566"
            .parse::<ServiceId>()
            .unwrap()
            .vsock_port(),
        None
    );
}

#[test]
fn well_known_vm_ids() {
    let cases = [
        (
            VmId::WILDCARD,
            "00000000-0000-0000-0000-000000000000",
            "wildcard",
        ),
        (
            VmId::BROADCAST,
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "broadcast",
        ),
        (
            VmId::CHILDREN,
            "90db8b89-0d35-4f79-8ce9-49ea0ac8b7cd",
            "children",
        ),
        (
            VmId::LOOPBACK,
            "e0e16197-dd56-4a10-9195-5ee7a155a838",
            "loopback",
        ),
        (
            VmId::PARENT,
            "a42e7cda-d03f-480c-9cc2-a4de20abb878",
            "parent",
        ),
        (
            VmId::SILOHOST,
            "36bd0c5c-7276-4223-88ba-7d03b654c568",
            "silohost",
        ),
    ];
    for (id, guid, name) in cases {
        assert_eq!(id.as_uuid().hyphenated().to_string(), guid);
        assert_eq!(id.to_string(), name);
        assert_eq!(guid.parse::<VmId>().unwrap(), id);
        assert_eq!(name.parse::<VmId>().unwrap(), id);
        assert_eq!(name.to_uppercase().parse::<VmId>().unwrap(), id);
    }
    assert!(VmId::WILDCARD.is_listen_wildcard());
    assert!(VmId::CHILDREN.is_listen_wildcard());
    assert!(!VmId::PARENT.is_listen_wildcard());
}

#[test]
fn parent_guid_bytes_le() {
    // a42e7cda-d03f-480c-9cc2-a4de20abb878 in Windows layout.
    assert_eq!(
        VmId::PARENT.to_bytes_le(),
        [
            0xda, 0x7c, 0x2e, 0xa4, 0x3f, 0xd0, 0x0c, 0x48, 0x9c, 0xc2, 0xa4, 0xde, 0x20, 0xab,
            0xb8, 0x78
        ]
    );
}

#[test]
fn sockaddr_hv_known_answer() {
    let addr = HvSocketAddr::new(VmId::PARENT, ServiceId::from_vsock_port(2761));
    let bytes = addr.to_sockaddr_bytes();
    assert_eq!(&bytes[0..4], &[34, 0, 0, 0]);
    assert_eq!(&bytes[4..20], &VmId::PARENT.to_bytes_le());
    assert_eq!(
        &bytes[20..36],
        &[
            0xc9, 0x0a, 0x00, 0x00, 0xcb, 0xfa, 0xe6, 0x11, 0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79,
            0x86, 0xd3
        ]
    );
    assert_eq!(HvSocketAddr::from_sockaddr_bytes(&bytes), Some(addr));
    assert_eq!(HvSocketAddr::from_sockaddr_bytes(&bytes[..35]), None);
    let mut wrong_family = bytes;
    wrong_family[0] = 40;
    assert_eq!(HvSocketAddr::from_sockaddr_bytes(&wrong_family), None);
}

#[test]
fn guid_input_forms() {
    let want: VmId = "5a7e3e8d-2c1b-4d3e-9f00-112233445566".parse().unwrap();
    for s in [
        "{5a7e3e8d-2c1b-4d3e-9f00-112233445566}",
        "5A7E3E8D-2C1B-4D3E-9F00-112233445566",
        "{5A7E3E8D-2c1b-4d3e-9f00-112233445566}",
    ] {
        assert_eq!(s.parse::<VmId>().unwrap(), want, "{s}");
    }
    assert_eq!(want.to_string(), "5a7e3e8d-2c1b-4d3e-9f00-112233445566");
    for bad in [
        "",
        "{5a7e3e8d-2c1b-4d3e-9f00-112233445566",
        "5a7e3e8d2c1b4d3e9f00112233445566",
        "5a7e3e8d-2c1b-4d3e-9f00-11223344556",
        "5a7e3e8d-2c1b-4d3e-9f00-11223344556g",
        "host",
    ] {
        let err = bad.parse::<VmId>().unwrap_err();
        assert!(err.to_string().contains("expected a VM id"), "{err}");
    }
}

#[test]
fn vsock_addr_forms() {
    assert_eq!("vsock://3:5000".parse(), Ok(VsockAddr::new(3, 5000)));
    assert_eq!("vsock://host:0x4856".parse(), Ok(VsockAddr::host(0x4856)));
    assert_eq!(
        "vsock://any:any".parse(),
        Ok(VsockAddr::new(u32::MAX, u32::MAX))
    );
    assert_eq!("vsock://local:1".parse(), Ok(VsockAddr::new(1, 1)));
    assert_eq!("vsock://hypervisor:1".parse(), Ok(VsockAddr::new(0, 1)));
    assert_eq!(VsockAddr::any(5).to_string(), "vsock://any:5");
    assert_eq!(VsockAddr::host(5).to_string(), "vsock://2:5");
    for (bad, why) in [
        ("vsock:/3:5000", "scheme"),
        ("vsock://3", "<cid>:<port>"),
        ("vsock://x:5000", "bad CID"),
        ("vsock://3:", "bad port"),
        ("vsock://3:4294967296", "bad port"),
        ("vsock://3:-1", "bad port"),
        ("vsock://3:+1", "bad port"),
        ("vsock://3:0x", "bad port"),
    ] {
        let err = bad.parse::<VsockAddr>().unwrap_err();
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
}

#[test]
fn hvsock_and_endpoint_forms() {
    let a: HvSocketAddr = "hvsock://parent/2761".parse().unwrap();
    assert_eq!(
        a,
        HvSocketAddr::new(VmId::PARENT, ServiceId::from_vsock_port(2761))
    );
    assert_eq!(
        a.to_string(),
        "hvsock://parent/00000ac9-facb-11e6-bd58-64006a7986d3"
    );
    let e: Endpoint = "hybrid-vsock:///tmp/a:b/vm.sock:52".parse().unwrap();
    assert_eq!(
        e,
        Endpoint::HybridVsock(HybridVsockAddr::new("/tmp/a:b/vm.sock", 52))
    );
    assert_eq!(
        HybridVsockAddr::new("/run/vm.vsock", 52).listener_path(),
        PathBuf::from("/run/vm.vsock_52")
    );
    assert_eq!("parent://0x4856".parse(), Ok(Endpoint::parent_port(0x4856)));
    assert_eq!(Endpoint::parent_port(0x4856).to_string(), "parent://18518");
    assert_eq!(
        "unix:///run/x.sock".parse(),
        Ok(Endpoint::unix("/run/x.sock"))
    );
    assert_eq!(
        "tcp://[::1]:80".parse::<Endpoint>().unwrap().to_string(),
        "tcp://[::1]:80"
    );
    for (bad, why) in [
        ("http://x", "unknown scheme"),
        ("localhost:80", "expected <scheme>://"),
        ("unix://", "path is empty"),
        ("tcp://localhost:80", "tcp://<ip>:<port>"),
        ("hvsock://parent", "hvsock://<vm-id>/<service-id>"),
        ("hvsock://nope/1", "expected a VM id"),
        ("hvsock://parent/nope", "expected a service id"),
        ("hybrid-vsock://:5", "path is empty"),
        ("hybrid-vsock:///x", "<unix socket path>:<port>"),
        ("parent://x", "expected a service id"),
    ] {
        let err = bad.parse::<Endpoint>().unwrap_err();
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn any_vm() -> impl Strategy<Value = VmId> {
        prop_oneof![
            any::<u128>().prop_map(VmId::from_u128),
            proptest::sample::select(VmId::NAMED.iter().map(|(_, v)| *v).collect::<Vec<_>>()),
        ]
    }

    fn any_service() -> impl Strategy<Value = ServiceId> {
        prop_oneof![
            any::<u128>().prop_map(ServiceId::from_u128),
            any::<u32>().prop_map(ServiceId::from_vsock_port),
        ]
    }

    fn any_endpoint() -> impl Strategy<Value = Endpoint> {
        prop_oneof![
            (any_vm(), any_service())
                .prop_map(|(v, s)| Endpoint::HvSocket(HvSocketAddr::new(v, s))),
            (any::<u32>(), any::<u32>()).prop_map(|(c, p)| Endpoint::Vsock(VsockAddr::new(c, p))),
            ("/[a-z0-9_:./-]{0,40}", any::<u32>())
                .prop_map(|(path, p)| Endpoint::HybridVsock(HybridVsockAddr::new(path, p))),
            any_service().prop_map(Endpoint::Parent),
            "[a-z0-9_:./-]{1,40}".prop_map(|p| Endpoint::Unix(p.into())),
            (any::<std::net::IpAddr>(), any::<u16>())
                .prop_map(|(ip, port)| Endpoint::Tcp(SocketAddr::new(ip, port))),
        ]
    }

    proptest! {
        #[test]
        fn endpoint_display_parse_round_trip(e in any_endpoint()) {
            let text = e.to_string();
            prop_assert_eq!(text.parse::<Endpoint>(), Ok(e), "{}", text);
        }

        #[test]
        fn guid_ids_round_trip(v in any_vm(), s in any_service()) {
            prop_assert_eq!(v.to_string().parse::<VmId>(), Ok(v));
            prop_assert_eq!(s.to_string().parse::<ServiceId>(), Ok(s));
            prop_assert_eq!(VmId::from_bytes_le(v.to_bytes_le()), v);
            let a = HvSocketAddr::new(v, s);
            prop_assert_eq!(HvSocketAddr::from_sockaddr_bytes(&a.to_sockaddr_bytes()), Some(a));
        }

        #[test]
        fn template_round_trip(port in any::<u32>()) {
            prop_assert_eq!(ServiceId::from_vsock_port(port).vsock_port(), Some(port));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Endpoint>();
            let _ = s.parse::<VmId>();
            let _ = s.parse::<ServiceId>();
        }
    }
}
