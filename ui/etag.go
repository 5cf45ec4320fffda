package ui

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"github.com/meshwork/meshwork/internal/httpjson"
)

// etagOf is a strong ETag of an asset's bytes.
func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

// notFound answers an unknown asset in the API's one error shape.
func notFound(w http.ResponseWriter, r *http.Request) {
	httpjson.CodedError(w, http.StatusNotFound, httpjson.CodeNotFound, errNoAsset(r.URL.Path))
}
