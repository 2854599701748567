// Command mirror decodes Mim objects as the reference does: Go's own encoding/json into structs
// written field for field from PROTOCOL.md §2 and §11.5 (the reference's apistructs.go).
//
// It reads one request per line on stdin, "<kind> <base64 of the JSON text>", and answers each with
// one line on stdout: "ok <base64 of json.Marshal of the decoded struct>" or "error <message>".
// Kinds are the seven object kinds and "page" (the ApiResponse envelope). Standard library only;
// tests/mim/test_differential.py builds and drives it.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type Fingerprint string
type Timestamp int64
type ProofOfWork string
type Signature string
type Location string
type Nonce string

type ProvableFieldSet struct {
	Fingerprint Fingerprint `json:"fingerprint"`
	Creation    Timestamp   `json:"creation"`
	ProofOfWork ProofOfWork `json:"proof_of_work"`
	Signature   Signature   `json:"signature"`
	Verified    bool        `json:"-"`
}

type UpdateableFieldSet struct {
	LastUpdate        Timestamp   `json:"last_update"`
	UpdateProofOfWork ProofOfWork `json:"update_proof_of_work"`
	UpdateSignature   Signature   `json:"update_signature"`
}

type BoardOwner struct {
	KeyFingerprint Fingerprint `json:"key_fingerprint"`
	Expiry         Timestamp   `json:"expiry"`
	Level          uint8       `json:"level"`
}

type Board struct {
	ProvableFieldSet
	Name           string       `json:"name"`
	BoardOwners    []BoardOwner `json:"board_owners"`
	Description    string       `json:"description"`
	Owner          Fingerprint  `json:"owner"`
	OwnerPublicKey string       `json:"owner_publickey"`
	EntityVersion  int          `json:"entity_version"`
	Language       string       `json:"language"`
	Meta           string       `json:"meta"`
	RealmId        Fingerprint  `json:"realm_id"`
	EncrContent    string       `json:"encrcontent"`
	UpdateableFieldSet
}

type Thread struct {
	ProvableFieldSet
	Board          Fingerprint `json:"board"`
	Name           string      `json:"name"`
	Body           string      `json:"body"`
	Link           string      `json:"link"`
	Owner          Fingerprint `json:"owner"`
	OwnerPublicKey string      `json:"owner_publickey"`
	EntityVersion  int         `json:"entity_version"`
	Meta           string      `json:"meta"`
	RealmId        Fingerprint `json:"realm_id"`
	EncrContent    string      `json:"encrcontent"`
	UpdateableFieldSet
}

type Post struct {
	ProvableFieldSet
	Board          Fingerprint `json:"board"`
	Thread         Fingerprint `json:"thread"`
	Parent         Fingerprint `json:"parent"`
	Body           string      `json:"body"`
	Owner          Fingerprint `json:"owner"`
	OwnerPublicKey string      `json:"owner_publickey"`
	EntityVersion  int         `json:"entity_version"`
	Meta           string      `json:"meta"`
	RealmId        Fingerprint `json:"realm_id"`
	EncrContent    string      `json:"encrcontent"`
	UpdateableFieldSet
}

type Vote struct {
	ProvableFieldSet
	Board          Fingerprint `json:"board"`
	Thread         Fingerprint `json:"thread"`
	Target         Fingerprint `json:"target"`
	Owner          Fingerprint `json:"owner"`
	OwnerPublicKey string      `json:"owner_publickey"`
	TypeClass      int         `json:"typeclass"`
	Type           int         `json:"type"`
	EntityVersion  int         `json:"entity_version"`
	Meta           string      `json:"meta"`
	RealmId        Fingerprint `json:"realm_id"`
	EncrContent    string      `json:"encrcontent"`
	UpdateableFieldSet
}

type Key struct {
	ProvableFieldSet
	Type          string      `json:"type"`
	Key           string      `json:"key"`
	Expiry        Timestamp   `json:"expiry"`
	Name          string      `json:"name"`
	Info          string      `json:"info"`
	EntityVersion int         `json:"entity_version"`
	Meta          string      `json:"meta"`
	RealmId       Fingerprint `json:"realm_id"`
	EncrContent   string      `json:"encrcontent"`
	UpdateableFieldSet
}

type Truststate struct {
	ProvableFieldSet
	Target         Fingerprint `json:"target"`
	Owner          Fingerprint `json:"owner"`
	OwnerPublicKey string      `json:"owner_publickey"`
	TypeClass      int         `json:"typeclass"`
	Type           int         `json:"type"`
	Domain         Fingerprint `json:"domain"`
	Expiry         Timestamp   `json:"expiry"`
	EntityVersion  int         `json:"entity_version"`
	Meta           string      `json:"meta"`
	RealmId        Fingerprint `json:"realm_id"`
	EncrContent    string      `json:"encrcontent"`
	UpdateableFieldSet
}

type Subprotocol struct {
	Name              string   `json:"name"`
	VersionMajor      uint8    `json:"version_major"`
	VersionMinor      uint16   `json:"version_minor"`
	SupportedEntities []string `json:"supported_entities"`
}

type Protocol struct {
	VersionMajor uint8         `json:"version_major"`
	VersionMinor uint16        `json:"version_minor"`
	Subprotocols []Subprotocol `json:"subprotocols"`
}

type Client struct {
	VersionMajor uint8  `json:"version_major"`
	VersionMinor uint16 `json:"version_minor"`
	VersionPatch uint16 `json:"version_patch"`
	ClientName   string `json:"name"`
}

// Address carries three fields tagged "-,omitempty": the key "-" three times at one depth, which
// Go's conflict rule drops, so none of them is ever encoded or decoded (PROTOCOL.md §2.8).
type Address struct {
	Location           Location    `json:"location"`
	Sublocation        Location    `json:"sublocation"`
	LocationType       uint8       `json:"location_type"`
	Port               uint16      `json:"port"`
	Type               uint8       `json:"type"`
	LastSuccessfulPing Timestamp   `json:"-,omitempty"`
	LastSuccessfulSync Timestamp   `json:"-,omitempty"`
	Protocol           Protocol    `json:"protocol"`
	Client             Client      `json:"client"`
	EntityVersion      int         `json:"entity_version"`
	RealmId            Fingerprint `json:"realm_id"`
	Verified           bool        `json:"-,omitempty"`
}

type AddressIndex Address

type BoardIndex struct {
	Fingerprint   Fingerprint `json:"fingerprint"`
	Owner         Fingerprint `json:",omitempty"`
	Creation      Timestamp   `json:"creation"`
	LastUpdate    Timestamp   `json:"last_update"`
	EntityVersion int         `json:"entity_version"`
	PageNumber    int         `json:"page_number"`
}

type ThreadIndex struct {
	Fingerprint   Fingerprint `json:"fingerprint"`
	Owner         Fingerprint `json:",omitempty"`
	Board         Fingerprint `json:"board"`
	Creation      Timestamp   `json:"creation"`
	LastUpdate    Timestamp   `json:"last_update"`
	EntityVersion int         `json:"entity_version"`
	PageNumber    int         `json:"page_number"`
}

type PostIndex struct {
	Fingerprint   Fingerprint `json:"fingerprint"`
	Owner         Fingerprint `json:",omitempty"`
	Board         Fingerprint `json:"board"`
	Thread        Fingerprint `json:"thread"`
	Parent        Fingerprint `json:",omitempty"`
	Creation      Timestamp   `json:"creation"`
	LastUpdate    Timestamp   `json:"last_update"`
	EntityVersion int         `json:"entity_version"`
	PageNumber    int         `json:"page_number"`
}

type VoteIndex struct {
	Fingerprint   Fingerprint `json:"fingerprint"`
	Owner         Fingerprint `json:",omitempty"`
	Board         Fingerprint `json:"board"`
	Thread        Fingerprint `json:"thread"`
	Target        Fingerprint `json:"target"`
	Creation      Timestamp   `json:"creation"`
	LastUpdate    Timestamp   `json:"last_update"`
	EntityVersion int         `json:"entity_version"`
	PageNumber    int         `json:"page_number"`
}

type KeyIndex struct {
	Fingerprint   Fingerprint `json:"fingerprint"`
	Creation      Timestamp   `json:"creation"`
	LastUpdate    Timestamp   `json:"last_update"`
	EntityVersion int         `json:"entity_version"`
	PageNumber    int         `json:"page_number"`
}

type TruststateIndex struct {
	Fingerprint   Fingerprint `json:"fingerprint"`
	Owner         Fingerprint `json:",omitempty"`
	Target        Fingerprint `json:"target"`
	Creation      Timestamp   `json:"creation"`
	LastUpdate    Timestamp   `json:"last_update"`
	EntityVersion int         `json:"entity_version"`
	PageNumber    int         `json:"page_number"`
}

type PageManifestEntity struct {
	Fingerprint Fingerprint `json:"fingerprint"`
	LastUpdate  Timestamp   `json:"last_update"`
}

type PageManifest struct {
	Page     uint64               `json:"page_number"`
	Entities []PageManifestEntity `json:"entities"`
}

type Filter struct {
	Type   string   `json:"type"`
	Values []string `json:"values"`
}

type Pagination struct {
	Pages       uint64 `json:"pages"`
	CurrentPage uint64 `json:"current_page"`
}

type EntityCount struct {
	Protocol string `json:"protocol"`
	Name     string `json:"name"`
	Count    int    `json:"count"`
}

type Caching struct {
	ServedFromCache bool          `json:"pregenerated"`
	CurrentCacheUrl string        `json:"current_cache_url"`
	EntityCounts    []EntityCount `json:"entity_counts"`
}

type ResultCache struct {
	ResponseUrl string    `json:"response_url"`
	StartsFrom  Timestamp `json:"starts_from"`
	EndsAt      Timestamp `json:"ends_at"`
}

type Answer struct {
	Boards              []Board           `json:"boards,omitempty"`
	Threads             []Thread          `json:"threads,omitempty"`
	Posts               []Post            `json:"posts,omitempty"`
	Votes               []Vote            `json:"votes,omitempty"`
	Keys                []Key             `json:"keys,omitempty"`
	Truststates         []Truststate      `json:"truststates,omitempty"`
	Addresses           []Address         `json:"addresses,omitempty"`
	BoardIndexes        []BoardIndex      `json:"boards_index,omitempty"`
	ThreadIndexes       []ThreadIndex     `json:"threads_index,omitempty"`
	PostIndexes         []PostIndex       `json:"posts_index,omitempty"`
	VoteIndexes         []VoteIndex       `json:"votes_index,omitempty"`
	KeyIndexes          []KeyIndex        `json:"keys_index,omitempty"`
	TruststateIndexes   []TruststateIndex `json:"truststates_index,omitempty"`
	AddressIndexes      []AddressIndex    `json:"addresses_index,omitempty"`
	BoardManifests      []PageManifest    `json:"boards_manifest,omitempty"`
	ThreadManifests     []PageManifest    `json:"threads_manifest,omitempty"`
	PostManifests       []PageManifest    `json:"posts_manifest,omitempty"`
	VoteManifests       []PageManifest    `json:"votes_manifest,omitempty"`
	KeyManifests        []PageManifest    `json:"keys_manifest,omitempty"`
	TruststateManifests []PageManifest    `json:"truststates_manifest,omitempty"`
	AddressManifests    []PageManifest    `json:"addresses_manifest,omitempty"`
}

type ApiResponse struct {
	NodeId        Fingerprint   `json:"-"`
	NodePublicKey string        `json:"node_public_key,omitempty"`
	Signature     Signature     `json:"page_signature,omitempty"`
	ProofOfWork   ProofOfWork   `json:"proof_of_work"`
	Nonce         Nonce         `json:"nonce,omitempty"`
	EntityVersion int           `json:"entity_version,omitempty"`
	Address       Address       `json:"address"`
	Entity        string        `json:"entity,omitempty"`
	Endpoint      string        `json:"endpoint,omitempty"`
	Filters       []Filter      `json:"filters,omitempty"`
	Timestamp     Timestamp     `json:"timestamp,omitempty"`
	StartsFrom    Timestamp     `json:"starts_from,omitempty"`
	EndsAt        Timestamp     `json:"ends_at,omitempty"`
	Pagination    Pagination    `json:"pagination"`
	Caching       Caching       `json:"caching"`
	Results       []ResultCache `json:"results,omitempty"`
	ResponseBody  Answer        `json:"response"`
}

// target is a fresh zero value of the struct a kind decodes into, as a pointer for Unmarshal.
func target(kind string) (interface{}, error) {
	switch kind {
	case "board":
		return &Board{}, nil
	case "thread":
		return &Thread{}, nil
	case "post":
		return &Post{}, nil
	case "vote":
		return &Vote{}, nil
	case "key":
		return &Key{}, nil
	case "truststate":
		return &Truststate{}, nil
	case "address":
		return &Address{}, nil
	case "page":
		return &ApiResponse{}, nil
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

// answer decodes one request line and says what Go makes of it.
func answer(line string) string {
	kind, encoded, found := strings.Cut(line, " ")
	if !found {
		return "fail request without a space"
	}
	text, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return "fail request is not base64: " + err.Error()
	}
	value, err := target(kind)
	if err != nil {
		return "fail " + err.Error()
	}
	if err := json.Unmarshal(text, value); err != nil {
		return "error " + strings.ReplaceAll(err.Error(), "\n", " ")
	}
	out, err := json.Marshal(value)
	if err != nil {
		return "fail marshal: " + err.Error()
	}
	return "ok " + base64.StdEncoding.EncodeToString(out)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 1<<28)
	out := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		fmt.Fprintln(out, answer(in.Text()))
		if err := out.Flush(); err != nil {
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
