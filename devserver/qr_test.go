package devserver

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// qrModules turns QR's output back into modules (true = dark), two rows a
// line; rows is the number of module rows (the last line may hold one).
func qrModules(t *testing.T, out string, rows int) [][]bool {
	t.Helper()
	var bits [][]bool
	for _, line := range strings.Split(out, "\n") {
		var top, bottom []bool
		for _, r := range line {
			var tl, bl bool // light?
			switch r {
			case '█':
				tl, bl = true, true
			case '▀':
				tl = true
			case '▄':
				bl = true
			case ' ':
			default:
				t.Fatalf("unexpected rune %q in %q", r, line)
			}
			top, bottom = append(top, !tl), append(bottom, !bl)
		}
		bits = append(bits, top, bottom)
	}
	if len(bits) < rows {
		t.Fatalf("%d module rows, want %d", len(bits), rows)
	}
	return bits[:rows]
}

func TestQRDimensions(t *testing.T) {
	// "http://beaker-test-site.local:8080/" is 35 bytes: at level M that
	// is version 3, 29x29 modules, 37 with the 4-module quiet zone each
	// side, so 37 columns and 19 lines (the last one a half line).
	const url = "http://beaker-test-site.local:8080/"
	out, err := QR(url)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if len(lines) != 19 {
		t.Errorf("%d lines, want 19", len(lines))
	}
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n != 37 {
			t.Errorf("line %d: %d columns, want 37", i, n)
		}
	}
	if strings.HasSuffix(out, "\n") {
		t.Error("output ends in a newline")
	}
	// The last line has only its upper half, the quiet zone's last row.
	if want := strings.Repeat("▀", 37); lines[18] != want {
		t.Errorf("last line %q, want %q", lines[18], want)
	}

	// A short IPv4 URL fits version 2: 25+8 = 33 modules.
	out, err = QR("http://192.168.1.23:8080/")
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(out, "\n")
	if len(lines) != 17 || utf8.RuneCountInString(lines[0]) != 33 {
		t.Errorf("IPv4 URL: %d lines of %d columns, want 17 of 33", len(lines), utf8.RuneCountInString(lines[0]))
	}
}

func TestQRDeterministic(t *testing.T) {
	a, err := QR("http://my-site.local:8080/")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		b, err := QR("http://my-site.local:8080/")
		if err != nil || a != b {
			t.Fatalf("run %d differs (err %v)", i, err)
		}
	}
	c, _ := QR("http://my-site.local:8081/")
	if c == a {
		t.Error("different text, same code")
	}
}

func TestQRFinderPatterns(t *testing.T) {
	out, err := QR("http://beaker-test-site.local:8080/")
	if err != nil {
		t.Fatal(err)
	}
	const size, quiet = 37, 4
	bits := qrModules(t, out, size)
	for y, row := range bits {
		if len(row) != size {
			t.Fatalf("row %d has %d modules", y, len(row))
		}
	}
	// Quiet zone: light all round.
	for i := 0; i < size; i++ {
		for q := 0; q < quiet; q++ {
			for _, m := range [][2]int{{q, i}, {size - 1 - q, i}, {i, q}, {i, size - 1 - q}} {
				if bits[m[0]][m[1]] {
					t.Fatalf("quiet zone module (row %d, col %d) is dark", m[0], m[1])
				}
			}
		}
	}
	// The three finder patterns (top-left, top-right, bottom-left): a 7x7
	// dark ring, a light ring, a dark 3x3 centre; then a light separator.
	for _, origin := range [][2]int{{quiet, quiet}, {quiet, size - quiet - 7}, {size - quiet - 7, quiet}} {
		for dy := -1; dy <= 7; dy++ {
			for dx := -1; dx <= 7; dx++ {
				y, x := origin[0]+dy, origin[1]+dx
				if y < quiet || x < quiet || y >= size-quiet || x >= size-quiet {
					continue // the separator outside the symbol
				}
				ring := max(qrAbs(dy-3), qrAbs(dx-3)) // 0..3 inside, 4 separator
				wantDark := ring == 3 || ring <= 1
				if bits[y][x] != wantDark {
					t.Errorf("finder at %v: module (row %d, col %d) dark=%v, want %v", origin, y, x, bits[y][x], wantDark)
				}
			}
		}
	}
	// The same, one module at a time as a person would see it: the
	// top-left corner of the top-left finder is the line covering module
	// rows 4 and 5, column 4: both dark, so a space; column 5 has a dark
	// top (ring) and light bottom (inner ring): '▄'.
	lines := strings.Split(out, "\n")
	row := []rune(lines[2])
	if row[3] != '█' || row[4] != ' ' || row[5] != '▄' {
		t.Errorf("top-left finder corner drawn as %q, want \"█ ▄\"", string(row[3:6]))
	}
}

func qrAbs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func TestQRTooLong(t *testing.T) {
	if _, err := QR(strings.Repeat("x", 5000)); err == nil {
		t.Error("5000 bytes encoded; want an error (too long for a QR code)")
	}
}
