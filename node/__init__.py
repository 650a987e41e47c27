"""The site's peer daemon: libp2p host, authenticated protocols, gossip averaging,
local store, consent and erasure handling, attestation and policy."""
