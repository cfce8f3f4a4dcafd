package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// family is a group of JWT algorithms that share one kind of key.
type family int

const (
	familyHMAC family = iota + 1
	familyRSA
	familyECDSA
	familyEdDSA
)

func (f family) String() string {
	switch f {
	case familyHMAC:
		return "HMAC"
	case familyRSA:
		return "RSA"
	case familyECDSA:
		return "ECDSA"
	case familyEdDSA:
		return "Ed25519"
	}
	return "unknown"
}

// algFamilies lists every algorithm a Verifier accepts. "none" is absent on purpose.
var algFamilies = map[string]family{
	"HS256": familyHMAC, "HS384": familyHMAC, "HS512": familyHMAC,
	"RS256": familyRSA, "RS384": familyRSA, "RS512": familyRSA,
	"PS256": familyRSA, "PS384": familyRSA, "PS512": familyRSA,
	"ES256": familyECDSA, "ES384": familyECDSA, "ES512": familyECDSA,
	"EdDSA": familyEdDSA,
}

// MinRSABits is the smallest RSA modulus accepted, for configured keys and for
// keys served by a JWKS URL.
const MinRSABits = 2048

// MinHMACSecret is the shortest HMAC secret accepted, in bytes (RFC 7518 section
// 3.2 asks for at least the hash size; 32 bytes covers HS256).
const MinHMACSecret = 32

// curveFor is the curve an ES algorithm is defined on.
func curveFor(alg string) elliptic.Curve {
	switch alg {
	case "ES256":
		return elliptic.P256()
	case "ES384":
		return elliptic.P384()
	case "ES512":
		return elliptic.P521()
	}
	return nil
}

// keyFits reports whether key may verify a token signed with alg. A key of
// another family never fits, so an HS256 token cannot be checked against an RSA
// public key, nor an ES256 token against a P-384 key.
func keyFits(alg string, key any) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return algFamilies[alg] == familyRSA && k != nil && k.N != nil && k.N.BitLen() >= MinRSABits
	case *ecdsa.PublicKey:
		return algFamilies[alg] == familyECDSA && k != nil && k.Curve != nil && k.Curve == curveFor(alg)
	case ed25519.PublicKey:
		return algFamilies[alg] == familyEdDSA && len(k) == ed25519.PublicKeySize
	}
	return false
}

// publicKeyFamily checks that key is a usable public key and says which
// algorithms it serves.
func publicKeyFamily(key crypto.PublicKey) (family, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return 0, errors.New("empty RSA key")
		}
		if n := k.N.BitLen(); n < MinRSABits {
			return 0, fmt.Errorf("RSA key of %d bits is too short (want at least %d)", n, MinRSABits)
		}
		return familyRSA, nil
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return 0, errors.New("empty ECDSA key")
		}
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return familyECDSA, nil
		}
		return 0, fmt.Errorf("ECDSA curve %s is not supported (want P-256, P-384 or P-521)", k.Curve.Params().Name)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return 0, errors.New("malformed Ed25519 key")
		}
		return familyEdDSA, nil
	case nil:
		return 0, errors.New("nil key")
	}
	return 0, fmt.Errorf("unsupported key type %T (want an RSA, ECDSA or Ed25519 public key)", key)
}

// LoadPublicKeys reads every public key from a PEM file. It accepts PUBLIC KEY
// (PKIX), RSA PUBLIC KEY (PKCS #1) and CERTIFICATE blocks, in any number and
// order; text between blocks is ignored. Private keys and other block types are
// refused, as are RSA keys shorter than MinRSABits and curves other than P-256,
// P-384 and P-521. A certificate contributes its public key only: its validity
// period and chain are not checked.
func LoadPublicKeys(pemBytes []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	rest := pemBytes
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		key, err := parsePEMBlock(block)
		if err != nil {
			return nil, fmt.Errorf("pem block %d (%s): %w", n, block.Type, err)
		}
		if _, err := publicKeyFamily(key); err != nil {
			return nil, fmt.Errorf("pem block %d (%s): %w", n, block.Type, err)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM block found")
	}
	return keys, nil
}

func parsePEMBlock(b *pem.Block) (crypto.PublicKey, error) {
	switch b.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(b.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(b.Bytes)
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.PublicKey, nil
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("a private key does not belong here: give the public key")
	}
	return nil, errors.New("unsupported block type (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)")
}
