package hyperdrive

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// SiteManifestFile is where a site keeps its manifest, as in Beaker.
const SiteManifestFile = "/dat.json"

// SiteManifest is a site's dat.json: Beaker's manifest. Unknown fields are
// kept in Raw so a rewrite loses nothing.
type SiteManifest struct {
	Title                 string
	Description           string
	WebRoot               string // folder served as the site root, e.g. "/public"
	FallbackPage          string // served for paths that do not exist, e.g. "/404.html" or "/index.html" for an app
	ContentSecurityPolicy string
	ForkOf                string // the URL (with version) this site was forked from
	Raw                   map[string]json.RawMessage
}

// ParseSiteManifest reads dat.json. Fields of the wrong type are errors;
// web_root and fallback_page are cleaned to absolute paths.
func ParseSiteManifest(b []byte) (SiteManifest, error) {
	var m SiteManifest
	if err := json.Unmarshal(b, &m.Raw); err != nil {
		return m, fmt.Errorf("dat.json is not a JSON object: %w", err)
	}
	str := func(key string, dst *string) error {
		v, ok := m.Raw[key]
		if !ok || string(v) == "null" {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("dat.json: %s must be a string", key)
		}
		return nil
	}
	for key, dst := range map[string]*string{"title": &m.Title, "description": &m.Description, "web_root": &m.WebRoot,
		"fallback_page": &m.FallbackPage, "content_security_policy": &m.ContentSecurityPolicy} {
		if err := str(key, dst); err != nil {
			return m, err
		}
	}
	// Beaker wrote forkOf as an array of URLs; beaker-dev writes a string.
	if v, ok := m.Raw["forkOf"]; ok {
		var list []string
		if json.Unmarshal(v, &m.ForkOf) != nil && json.Unmarshal(v, &list) == nil && len(list) > 0 {
			m.ForkOf = list[len(list)-1]
		}
	}
	clean := func(p string) string {
		if p == "" {
			return ""
		}
		p = path.Clean("/" + strings.TrimSpace(p))
		if p == "/" {
			return ""
		}
		return p
	}
	m.WebRoot = clean(m.WebRoot)
	m.FallbackPage = clean(m.FallbackPage)
	return m, nil
}

// ForkManifest returns the dat.json of a fork of the site whose dat.json is
// src (nil for none): every field is kept (title, description, web_root,
// fallback_page, content_security_policy, links and any other) but "url",
// which named the original, and forkOf is set to the source's versioned URL.
func ForkManifest(src []byte, forkOf string) ([]byte, error) {
	raw := map[string]json.RawMessage{}
	if len(src) > 0 {
		if _, err := ParseSiteManifest(src); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(src, &raw); err != nil {
			return nil, err
		}
	}
	delete(raw, "url")
	v, err := json.Marshal(forkOf)
	if err != nil {
		return nil, err
	}
	raw["forkOf"] = v
	out, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
