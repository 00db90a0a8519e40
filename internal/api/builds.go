package api

import "time"

// PublishRequest is what CI sends to publish a commit.
type PublishRequest struct {
	Commit  string   `json:"commit"`
	Branch  string   `json:"branch"`
	Tags    []string `json:"tags"`
	Message string   `json:"message"`
	Author  string   `json:"author"`
}

// Build is one published commit of an app.
type Build struct {
	Commit      string    `json:"commit"`
	Branch      string    `json:"branch,omitempty"`
	Tags        []string  `json:"tags"`
	Archs       []string  `json:"archs"`
	Message     string    `json:"message,omitempty"`
	Author      string    `json:"author,omitempty"`
	PublishedAt time.Time `json:"published_at"`
}

// Builds is the answer of GET .../builds, newest first.
type Builds struct {
	Builds []Build `json:"builds"`
}

// Pointer is where a branch or tag points, since when.
type Pointer struct {
	Commit    string    `json:"commit"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Refs lists an app's branches and tags.
type Refs struct {
	Branches map[string]Pointer `json:"branches"`
	Tags     map[string]Pointer `json:"tags"`
}

// Key is a key an app trusts.
type Key struct {
	Name string `json:"name"`
	// Fingerprint is the SHA-256 of the key's DER encoding, in hex.
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
}

// Keys is the answer of GET .../keys.
type Keys struct {
	Keys []Key `json:"keys"`
}

// App is an app's settings and keys.
type App struct {
	App           string `json:"app"`
	AllowUnsigned bool   `json:"allow_unsigned"`
	Keys          []Key  `json:"keys"`
	// Retention is the app's own policy (absent fields: the server's).
	Retention Retention `json:"retention"`
}

// AppPatch changes an app's settings; absent fields stay.
type AppPatch struct {
	AllowUnsigned *bool `json:"allow_unsigned"`
	// Retention replaces the app's retention policy when set.
	Retention *Retention `json:"retention,omitempty"`
}
