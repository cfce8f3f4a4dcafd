// Package auth establishes who is asking for a download: an end user signed in to
// the customer portal, proven by the portal's JWT (HMAC secrets, RSA, ECDSA or
// Ed25519 public keys, or a JWKS URL), or the holder of a link grant, a compact
// HMAC token that streamgate signs itself so that any replica can serve the link.
//
// Every verification failure wraps ErrInvalidToken; a request that presents no
// token at all gets ErrNoCredentials. Error messages say why a token was refused
// but never repeat the token.
package auth

// Sources of an Identity.
const (
	// SourceJWT marks an identity proven by a portal JWT.
	SourceJWT = "jwt"
	// SourceGrant marks an identity carried by a link grant.
	SourceGrant = "grant"
)

// Identity is who is asking.
type Identity struct {
	// UserID is the portal's user ID, from the JWT's user claim or the grant.
	UserID string
	// Plan is the user's plan; "" when the token has no plan claim.
	Plan string
	// Source is SourceJWT or SourceGrant.
	Source string
	// Grant is the verified grant when Source == SourceGrant, else nil.
	Grant *Grant
}
