package lsp

import "encoding/json"

// The LSP messages the bridge uses, only the fields it reads or sends.
// Positions are 0-based lines and UTF-16 columns.

type lspPosition struct {
	Line      int `json:"line"`
	Character int `json:"character"`
}

type lspRange struct {
	Start lspPosition `json:"start"`
	End   lspPosition `json:"end"`
}

type lspLocation struct {
	URI   string   `json:"uri"`
	Range lspRange `json:"range"`
}

// lspLocationLink is a definition's answer when the client allows links.
type lspLocationLink struct {
	TargetURI            string   `json:"targetUri"`
	TargetSelectionRange lspRange `json:"targetSelectionRange"`
}

type textDocumentID struct {
	URI string `json:"uri"`
}

type positionParams struct {
	TextDocument textDocumentID `json:"textDocument"`
	Position     lspPosition    `json:"position"`
}

type referenceParams struct {
	positionParams
	Context struct {
		IncludeDeclaration bool `json:"includeDeclaration"`
	} `json:"context"`
}

type hoverResult struct {
	Contents json.RawMessage `json:"contents"`
}

type lspDiagnostic struct {
	Range    lspRange        `json:"range"`
	Severity int             `json:"severity"`
	Code     json.RawMessage `json:"code"`
	Source   string          `json:"source"`
	Message  string          `json:"message"`
}

type publishDiagnosticsParams struct {
	URI         string          `json:"uri"`
	Version     *int            `json:"version"`
	Diagnostics []lspDiagnostic `json:"diagnostics"`
}

type progressParams struct {
	Token json.RawMessage `json:"token"`
	Value struct {
		Kind  string `json:"kind"`
		Title string `json:"title"`
	} `json:"value"`
}

type textDocumentItem struct {
	URI        string `json:"uri"`
	LanguageID string `json:"languageId"`
	Version    int    `json:"version"`
	Text       string `json:"text"`
}

type fileEvent struct {
	URI  string `json:"uri"`
	Type int    `json:"type"` // 1 created, 2 changed, 3 deleted
}

var severities = [...]string{1: "error", "warning", "information", "hint"}

func severity(s int) string {
	if s > 0 && s < len(severities) {
		return severities[s]
	}
	return "error" // LSP: the client decides; an unknown one is shown as an error
}

// initializeParams declares what the bridge handles.
func initializeParams(rootURI, name string, opts map[string]any) map[string]any {
	return map[string]any{
		"processId":             nil,
		"clientInfo":            map[string]any{"name": "cortex-peer"},
		"rootUri":               rootURI,
		"workspaceFolders":      []map[string]any{{"uri": rootURI, "name": name}},
		"initializationOptions": opts,
		"capabilities": map[string]any{
			"general": map[string]any{"positionEncodings": []string{"utf-16"}},
			"window":  map[string]any{"workDoneProgress": true},
			"workspace": map[string]any{
				"workspaceFolders":      true,
				"configuration":         true,
				"didChangeWatchedFiles": map[string]any{"dynamicRegistration": true},
				"symbol":                map[string]any{},
				"workspaceEdit":         map[string]any{"documentChanges": true},
			},
			"textDocument": map[string]any{
				"synchronization":    map[string]any{},
				"definition":         map[string]any{"linkSupport": true},
				"references":         map[string]any{},
				"hover":              map[string]any{"contentFormat": []string{"plaintext", "markdown"}},
				"documentSymbol":     map[string]any{"hierarchicalDocumentSymbolSupport": true},
				"publishDiagnostics": map[string]any{"versionSupport": true},
				"rename":             map[string]any{},
				"formatting":         map[string]any{},
			},
		},
	}
}
