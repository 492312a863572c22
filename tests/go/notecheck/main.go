// Command notecheck opens signed notes with Go's golang.org/x/mod/sumdb/note and prints one JSON
// result per case, so the Python tests can compare trustmesh's parser with Go's.
//
// Input (file named by the first argument): a JSON list of {"name", "note_b64", "keys"}. Keys are
// vkeys; type 0x01 keys go through note.NewVerifier, type 0x04 keys (C2SP tlog-cosignature
// cosignature/v1) through the small verifier below, because x/mod's note package knows only 0x01.
// Output: a JSON list of {"name", "result", "verified"} with result ok, malformed,
// invalid_signature, unverified or "error: ...".
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type vector struct {
	Name    string   `json:"name"`
	NoteB64 string   `json:"note_b64"`
	Keys    []string `json:"keys"`
}

type result struct {
	Name     string   `json:"name"`
	Result   string   `json:"result"`
	Verified []string `json:"verified"`
}

type cosigVerifier struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig[:8])
	if ts >= 1<<63 {
		return false
	}
	signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", ts)), msg...)
	return ed25519.Verify(v.pub, signed, sig[8:])
}

func newVerifier(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) == 3 {
		key, err := base64.StdEncoding.DecodeString(parts[2])
		if err == nil && len(key) == 33 && key[0] == 0x04 {
			h := sha256.Sum256(append([]byte(parts[0]+"\n"), key...))
			want, err := strconv.ParseUint(parts[1], 16, 32)
			if err != nil || uint32(want) != binary.BigEndian.Uint32(h[:4]) {
				return nil, errors.New("cosignature key hash mismatch")
			}
			return &cosigVerifier{parts[0], uint32(want), ed25519.PublicKey(key[1:])}, nil
		}
	}
	return note.NewVerifier(vkey)
}

func check(v vector) result {
	out := result{Name: v.Name, Verified: []string{}}
	msg, err := base64.StdEncoding.DecodeString(v.NoteB64)
	if err != nil {
		out.Result = "error: note_b64: " + err.Error()
		return out
	}
	var verifiers []note.Verifier
	for _, k := range v.Keys {
		ver, err := newVerifier(k)
		if err != nil {
			out.Result = "error: key: " + err.Error()
			return out
		}
		verifiers = append(verifiers, ver)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	var invalid *note.InvalidSignatureError
	var unverified *note.UnverifiedNoteError
	switch {
	case err == nil:
		out.Result = "ok"
		for _, s := range n.Sigs {
			out.Verified = append(out.Verified, s.Name)
		}
	case errors.As(err, &invalid):
		out.Result = "invalid_signature"
	case errors.As(err, &unverified):
		out.Result = "unverified"
	case err.Error() == "malformed note":
		out.Result = "malformed"
	default:
		out.Result = "error: " + err.Error()
	}
	return out
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: notecheck VECTORS.json")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var vectors []vector
	if err := json.Unmarshal(data, &vectors); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	results := make([]result, 0, len(vectors))
	for _, v := range vectors {
		results = append(results, check(v))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
