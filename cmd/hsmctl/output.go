package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// printJSON writes v as indented JSON and a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// fields prints name/value pairs in two aligned columns, skipping empty
// values.
func fields(w io.Writer, pairs ...string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", pairs[i], shown(pairs[i+1]))
		}
	}
	return tw.Flush()
}

// shown is s as text output prints it: a character that would act on the
// terminal instead of being shown (keys.IsDisplayControl: an escape
// sequence, a carriage return, a right-to-left override) is printed as its
// Go escape. The broker refuses such characters in descriptions and tags,
// but a value stored by an earlier version, or sent by another broker, may
// hold one.
func shown(s string) string {
	if !strings.ContainsFunc(s, keys.IsDisplayControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if keys.IsDisplayControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// table prints a header row and rows in aligned columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = shown(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// timeString formats a timestamp as RFC 3339 in UTC, or "" if unset.
func timeString(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// keyJSON is a key's metadata in JSON output. Enum values are AWS names.
type keyJSON struct {
	KeyID                string            `json:"keyId"`
	Arn                  string            `json:"arn"`
	Aliases              []string          `json:"aliases"`
	Description          string            `json:"description"`
	KeySpec              string            `json:"keySpec"`
	KeyUsage             string            `json:"keyUsage"`
	KeyState             string            `json:"keyState"`
	CreateTime           string            `json:"createTime"`
	DeletionDate         string            `json:"deletionDate,omitempty"`
	PendingWindowDays    uint32            `json:"pendingWindowDays,omitempty"`
	CurrentVersion       uint32            `json:"currentVersion"`
	EncryptionAlgorithms []string          `json:"encryptionAlgorithms,omitempty"`
	SigningAlgorithms    []string          `json:"signingAlgorithms,omitempty"`
	MacAlgorithms        []string          `json:"macAlgorithms,omitempty"`
	RotationEnabled      bool              `json:"rotationEnabled"`
	Creator              string            `json:"creator,omitempty"`
	Tags                 map[string]string `json:"tags"`
}

func keyToJSON(m *pb.KeyMetadata) keyJSON {
	k := keyJSON{
		KeyID:                m.GetKeyId(),
		Arn:                  m.GetArn(),
		Aliases:              append([]string{}, m.GetAliasNames()...),
		Description:          m.GetDescription(),
		KeySpec:              keySpecs.name(int32(m.GetKeySpec())),
		KeyUsage:             keyUsages.name(int32(m.GetKeyUsage())),
		KeyState:             keyStateName(m.GetKeyState()),
		CreateTime:           timeString(m.GetCreateTime()),
		DeletionDate:         timeString(m.GetDeletionDate()),
		PendingWindowDays:    m.GetPendingWindowDays(),
		CurrentVersion:       m.GetCurrentVersion(),
		EncryptionAlgorithms: names(encryptionAlgs, m.GetEncryptionAlgorithms()),
		SigningAlgorithms:    names(signingAlgs, m.GetSigningAlgorithms()),
		MacAlgorithms:        names(macAlgs, m.GetMacAlgorithms()),
		RotationEnabled:      m.GetRotationEnabled(),
		Creator:              m.GetCreator(),
		Tags:                 maps.Clone(m.GetTags()),
	}
	if k.Tags == nil {
		k.Tags = map[string]string{}
	}
	return k
}

// printKey prints one key's metadata.
func (a *app) printKey(m *pb.KeyMetadata) error {
	if a.json() {
		return printJSON(a.stdout, keyToJSON(m))
	}
	k := keyToJSON(m)
	var pending string
	if k.DeletionDate != "" {
		pending = fmt.Sprintf("%s (after %d days)", k.DeletionDate, k.PendingWindowDays)
	}
	return fields(a.stdout,
		"KeyId", k.KeyID,
		"Arn", k.Arn,
		"Aliases", strings.Join(k.Aliases, ", "),
		"Description", k.Description,
		"KeySpec", k.KeySpec,
		"KeyUsage", k.KeyUsage,
		"KeyState", k.KeyState,
		"DeletionDate", pending,
		"CreateTime", k.CreateTime,
		"CurrentVersion", fmt.Sprint(k.CurrentVersion),
		"EncryptionAlgorithms", strings.Join(k.EncryptionAlgorithms, ", "),
		"SigningAlgorithms", strings.Join(k.SigningAlgorithms, ", "),
		"MacAlgorithms", strings.Join(k.MacAlgorithms, ", "),
		"Creator", k.Creator,
		"Tags", tagString(k.Tags),
	)
}

// tagString is "k1=v1, k2=v2" in key order.
func tagString(tags map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		parts = append(parts, k+"="+tags[k])
	}
	return strings.Join(parts, ", ")
}

// aliasJSON is an alias in JSON output.
type aliasJSON struct {
	AliasName   string `json:"aliasName"`
	AliasArn    string `json:"aliasArn"`
	TargetKeyID string `json:"targetKeyId"`
	CreateTime  string `json:"createTime"`
	UpdateTime  string `json:"updateTime"`
}

func aliasToJSON(al *pb.Alias) aliasJSON {
	return aliasJSON{
		AliasName:   al.GetAliasName(),
		AliasArn:    al.GetAliasArn(),
		TargetKeyID: al.GetTargetKeyId(),
		CreateTime:  timeString(al.GetCreateTime()),
		UpdateTime:  timeString(al.GetUpdateTime()),
	}
}

func (a *app) printAlias(al *pb.Alias) error {
	if a.json() {
		return printJSON(a.stdout, aliasToJSON(al))
	}
	j := aliasToJSON(al)
	return fields(a.stdout,
		"AliasName", j.AliasName,
		"AliasArn", j.AliasArn,
		"TargetKeyId", j.TargetKeyID,
		"CreateTime", j.CreateTime,
		"UpdateTime", j.UpdateTime,
	)
}

// pageLimitFlag adds --limit to a list command: the page size, by default
// the broker's own (keys.DefaultPageSize), which the help shows.
func pageLimitFlag(cmd *cobra.Command, limit *int, what string) {
	cmd.Flags().IntVar(limit, "limit", keys.DefaultPageSize, fmt.Sprintf("%s per page, 1 to %d", what, keys.MaxPageSize))
}

// checkPageLimit refuses a --limit the broker would refuse or, for 0, read
// as its default page size.
func checkPageLimit(limit int) error {
	if limit < 1 || limit > keys.MaxPageSize {
		return usageErr(fmt.Sprintf("--limit must be 1 to %d, got %d", keys.MaxPageSize, limit))
	}
	return nil
}

// collectPages fetches one page starting at token, or with all every page
// until the last, and returns the items and the token of the next page
// ("" after the last).
func collectPages[T any](token string, all bool, fetch func(token string) ([]T, string, error)) ([]T, string, error) {
	var items []T
	for {
		page, next, err := fetch(token)
		if err != nil {
			return nil, "", err
		}
		items, token = append(items, page...), next
		if !all || token == "" {
			return items, token, nil
		}
	}
}
