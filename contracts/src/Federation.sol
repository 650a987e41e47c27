// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title PAROMA-MED federation: k-of-n membership and the audit registries.
/// @notice Holds no personal data: only 32-byte digests and salted
/// commitments, purpose codes, roles, institutions' DIDs and timestamps.
/// Every write comes from a current member's account; everything is readable.
contract Federation {
    struct Member {
        string did;
        address account;
        string[] roles;
        uint64 admittedAt;
        bool removed;
    }

    struct Proposal {
        string did;
        address account;
        string[] roles;
        bool removal;
        uint32 votes;
        bool executed;
    }

    struct Consent {
        address holder;
        uint16 purpose;
        uint64 expiry;
        bool registered;
        bool withdrawn;
    }

    struct Offer {
        address publisher;
        uint8 kind;
        bytes32 metadataDigest;
        string uri;
        bool withdrawn;
    }

    /// k: votes of current members that admit or remove a member.
    uint32 public immutable threshold;
    uint32 public memberCount;
    uint256 public proposalCount;

    Member[] private _members;
    mapping(address => uint256) private _indexByAccount; // index + 1, 0: none
    mapping(bytes32 => uint256) private _indexByDid; // keccak(did) -> index + 1
    mapping(uint256 => Proposal) private _proposals;
    mapping(uint256 => mapping(address => bool)) private _voted;
    mapping(bytes32 => Consent) private _consents;
    mapping(bytes32 => uint8) private _erasures; // 1 requested, 2 completed
    mapping(bytes32 => Offer) private _offers;
    mapping(bytes32 => bytes32) private _statusLists; // keccak(issuer did) -> digest

    event MemberProposed(
        uint256 indexed proposalId, address indexed by, string did,
        address account, string[] roles, bool removal, uint64 timestamp
    );
    event MemberVoted(
        uint256 indexed proposalId, address indexed by, uint32 votes, uint64 timestamp
    );
    event MemberAdmitted(
        uint256 indexed proposalId, address indexed by, string did,
        address account, string[] roles, uint64 timestamp
    );
    event MemberRemoved(
        uint256 indexed proposalId, address indexed by, string did,
        address account, uint64 timestamp
    );
    event Attestation(
        address indexed by, string subjectDid, bytes32 indexed measurementDigest,
        bytes32 evidenceDigest, bool verdict, uint64 timestamp
    );
    event ConsentRegistered(
        address indexed by, bytes32 indexed commitment, uint16 purpose,
        uint64 expiry, uint64 timestamp
    );
    event ConsentWithdrawn(address indexed by, bytes32 indexed commitment, uint64 timestamp);
    event ErasureRequested(address indexed by, bytes32 indexed commitment, uint64 timestamp);
    event ErasureCompleted(
        address indexed by, bytes32 indexed commitment, bytes32 proofDigest, uint64 timestamp
    );
    event ModelRecorded(
        address indexed by, uint64 round, bytes32 indexed modelDigest,
        bytes32[] parents, string[] contributors, uint64 timestamp
    );
    event OfferPublished(
        address indexed by, bytes32 indexed offerId, uint8 kind,
        bytes32 metadataDigest, string uri, uint64 timestamp
    );
    event OfferWithdrawn(address indexed by, bytes32 indexed offerId, uint64 timestamp);
    event StatusListPublished(
        address indexed by, string issuerDid, bytes32 indexed digest, uint64 timestamp
    );

    modifier onlyMember() {
        require(isMemberAccount(msg.sender), "not a member");
        _;
    }

    /// @param dids founders' DIDs, admitted at deployment without a vote.
    /// @param accounts their ledger accounts, one per DID.
    /// @param roles their roles, one list per DID.
    /// @param k votes needed later to admit or remove a member (1 <= k <= founders).
    constructor(
        string[] memory dids, address[] memory accounts, string[][] memory roles, uint32 k
    ) {
        require(dids.length == accounts.length && dids.length == roles.length, "founder lists differ in length");
        require(k >= 1 && k <= dids.length, "threshold out of range");
        threshold = k;
        for (uint256 i = 0; i < dids.length; i++) {
            _admit(0, dids[i], accounts[i], roles[i]);
        }
    }

    // ----- membership ------------------------------------------------------------

    function proposeAdmission(string calldata did, address account, string[] memory roles)
        external onlyMember returns (uint256 id)
    {
        require(bytes(did).length > 0, "empty did");
        require(account != address(0), "zero account");
        require(_indexByDid[keccak256(bytes(did))] == 0, "did already admitted");
        require(_indexByAccount[account] == 0, "account already linked");
        id = ++proposalCount;
        Proposal storage p = _proposals[id];
        p.did = did;
        p.account = account;
        p.roles = roles;
        emit MemberProposed(id, msg.sender, did, account, roles, false, uint64(block.timestamp));
        _vote(id);
    }

    function proposeRemoval(string calldata did) external onlyMember returns (uint256 id) {
        uint256 idx = _indexByDid[keccak256(bytes(did))];
        require(idx != 0 && !_members[idx - 1].removed, "not a current member");
        require(memberCount > threshold, "removal would leave fewer members than the threshold");
        id = ++proposalCount;
        Proposal storage p = _proposals[id];
        p.did = did;
        p.account = _members[idx - 1].account;
        p.removal = true;
        emit MemberProposed(id, msg.sender, did, p.account, p.roles, true, uint64(block.timestamp));
        _vote(id);
    }

    function vote(uint256 id) external onlyMember {
        require(id >= 1 && id <= proposalCount, "no such proposal");
        _vote(id);
    }

    function _vote(uint256 id) private {
        Proposal storage p = _proposals[id];
        require(!p.executed, "proposal already executed");
        require(!_voted[id][msg.sender], "already voted");
        _voted[id][msg.sender] = true;
        p.votes += 1;
        emit MemberVoted(id, msg.sender, p.votes, uint64(block.timestamp));
        if (p.votes >= threshold) {
            p.executed = true;
            if (p.removal) {
                _remove(id, p.did);
            } else {
                require(_indexByDid[keccak256(bytes(p.did))] == 0, "did already admitted");
                require(_indexByAccount[p.account] == 0, "account already linked");
                _admit(id, p.did, p.account, p.roles);
            }
        }
    }

    function _admit(uint256 id, string memory did, address account, string[] memory roles) private {
        require(bytes(did).length > 0 && account != address(0), "empty founder");
        require(_indexByDid[keccak256(bytes(did))] == 0, "did already admitted");
        require(_indexByAccount[account] == 0, "account already linked");
        _members.push(Member(did, account, roles, uint64(block.timestamp), false));
        _indexByAccount[account] = _members.length;
        _indexByDid[keccak256(bytes(did))] = _members.length;
        memberCount += 1;
        emit MemberAdmitted(id, msg.sender, did, account, roles, uint64(block.timestamp));
    }

    function _remove(uint256 id, string memory did) private {
        uint256 idx = _indexByDid[keccak256(bytes(did))];
        Member storage m = _members[idx - 1];
        require(!m.removed, "not a current member");
        require(memberCount > threshold, "removal would leave fewer members than the threshold");
        m.removed = true;
        memberCount -= 1;
        emit MemberRemoved(id, msg.sender, did, m.account, uint64(block.timestamp));
    }

    function isMemberAccount(address account) public view returns (bool) {
        uint256 idx = _indexByAccount[account];
        return idx != 0 && !_members[idx - 1].removed;
    }

    function isMemberDid(string calldata did) external view returns (bool) {
        uint256 idx = _indexByDid[keccak256(bytes(did))];
        return idx != 0 && !_members[idx - 1].removed;
    }

    function memberTotal() external view returns (uint256) {
        return _members.length;
    }

    function memberAt(uint256 i) external view returns (
        string memory did, address account, string[] memory roles, uint64 admittedAt, bool removed
    ) {
        Member storage m = _members[i];
        return (m.did, m.account, m.roles, m.admittedAt, m.removed);
    }

    function didOfAccount(address account) external view returns (string memory) {
        uint256 idx = _indexByAccount[account];
        return idx == 0 ? "" : _members[idx - 1].did;
    }

    function memberIndexOfDid(string calldata did) external view returns (uint256) {
        return _indexByDid[keccak256(bytes(did))];
    }

    function proposalAt(uint256 id) external view returns (
        string memory did, address account, string[] memory roles,
        bool removal, uint32 votes, bool executed
    ) {
        require(id >= 1 && id <= proposalCount, "no such proposal");
        Proposal storage p = _proposals[id];
        return (p.did, p.account, p.roles, p.removal, p.votes, p.executed);
    }

    function hasVoted(uint256 id, address account) external view returns (bool) {
        return _voted[id][account];
    }

    // ----- attestations ----------------------------------------------------------

    function recordAttestation(
        string calldata subjectDid, bytes32 measurementDigest, bytes32 evidenceDigest, bool verdict
    ) external onlyMember {
        require(bytes(subjectDid).length > 0, "empty subject did");
        emit Attestation(msg.sender, subjectDid, measurementDigest, evidenceDigest, verdict, uint64(block.timestamp));
    }

    // ----- consent ---------------------------------------------------------------

    function registerConsent(bytes32 commitment, uint16 purpose, uint64 expiry) external onlyMember {
        require(commitment != bytes32(0), "zero commitment");
        Consent storage c = _consents[commitment];
        require(!c.registered, "consent already registered");
        require(_erasures[commitment] == 0, "commitment erased");
        _consents[commitment] = Consent(msg.sender, purpose, expiry, true, false);
        emit ConsentRegistered(msg.sender, commitment, purpose, expiry, uint64(block.timestamp));
    }

    function withdrawConsent(bytes32 commitment) external onlyMember {
        Consent storage c = _consents[commitment];
        require(c.registered, "no such consent");
        require(c.holder == msg.sender, "consent held by another member");
        require(!c.withdrawn, "consent already withdrawn");
        c.withdrawn = true;
        emit ConsentWithdrawn(msg.sender, commitment, uint64(block.timestamp));
    }

    function consentOf(bytes32 commitment) external view returns (
        address holder, uint16 purpose, uint64 expiry, bool registered, bool withdrawn
    ) {
        Consent storage c = _consents[commitment];
        return (c.holder, c.purpose, c.expiry, c.registered, c.withdrawn);
    }

    function consentActive(bytes32 commitment, uint64 at) external view returns (bool) {
        Consent storage c = _consents[commitment];
        return c.registered && !c.withdrawn && _erasures[commitment] == 0
            && (c.expiry == 0 || at < c.expiry);
    }

    // ----- erasure ---------------------------------------------------------------

    function requestErasure(bytes32 commitment) external onlyMember {
        require(commitment != bytes32(0), "zero commitment");
        require(_erasures[commitment] == 0, "erasure already requested");
        _erasures[commitment] = 1;
        emit ErasureRequested(msg.sender, commitment, uint64(block.timestamp));
    }

    function completeErasure(bytes32 commitment, bytes32 proofDigest) external onlyMember {
        require(_erasures[commitment] == 1, "no pending erasure request");
        _erasures[commitment] = 2;
        emit ErasureCompleted(msg.sender, commitment, proofDigest, uint64(block.timestamp));
    }

    function erasureState(bytes32 commitment) external view returns (uint8) {
        return _erasures[commitment];
    }

    // ----- model provenance ------------------------------------------------------

    function recordModel(
        uint64 round, bytes32 modelDigest, bytes32[] calldata parents, string[] calldata contributors
    ) external onlyMember {
        require(modelDigest != bytes32(0), "zero model digest");
        emit ModelRecorded(msg.sender, round, modelDigest, parents, contributors, uint64(block.timestamp));
    }

    // ----- catalogue -------------------------------------------------------------

    function publishOffer(bytes32 offerId, uint8 kind, bytes32 metadataDigest, string calldata uri)
        external onlyMember
    {
        require(kind <= 1, "offer kind must be 0 (data) or 1 (service)");
        Offer storage o = _offers[offerId];
        require(o.publisher == address(0) || o.publisher == msg.sender, "offer published by another member");
        _offers[offerId] = Offer(msg.sender, kind, metadataDigest, uri, false);
        emit OfferPublished(msg.sender, offerId, kind, metadataDigest, uri, uint64(block.timestamp));
    }

    function withdrawOffer(bytes32 offerId) external onlyMember {
        Offer storage o = _offers[offerId];
        require(o.publisher != address(0), "no such offer");
        require(o.publisher == msg.sender, "offer published by another member");
        require(!o.withdrawn, "offer already withdrawn");
        o.withdrawn = true;
        emit OfferWithdrawn(msg.sender, offerId, uint64(block.timestamp));
    }

    function offerOf(bytes32 offerId) external view returns (
        address publisher, uint8 kind, bytes32 metadataDigest, string memory uri, bool withdrawn
    ) {
        Offer storage o = _offers[offerId];
        return (o.publisher, o.kind, o.metadataDigest, o.uri, o.withdrawn);
    }

    // ----- credential status -----------------------------------------------------

    function publishStatusList(string calldata issuerDid, bytes32 digest) external onlyMember {
        require(bytes(issuerDid).length > 0, "empty issuer did");
        _statusLists[keccak256(bytes(issuerDid))] = digest;
        emit StatusListPublished(msg.sender, issuerDid, digest, uint64(block.timestamp));
    }

    function statusListOf(string calldata issuerDid) external view returns (bytes32) {
        return _statusLists[keccak256(bytes(issuerDid))];
    }
}
