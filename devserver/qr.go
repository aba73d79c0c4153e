package devserver

import (
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// QR renders text as a QR code for a terminal, using Unicode half blocks
// (two rows of modules per line) with a quiet zone, dark modules as spaces
// on a light background so phones scan it from dark terminals too. Returns
// the lines joined with "\n".
//
// Light modules, including the 4-module quiet zone, are drawn with the
// terminal's foreground colour ('█', '▀', '▄') and dark ones are left as
// spaces, showing the background. On the usual dark terminal that gives
// dark modules on light, as a QR code should be; on a light terminal the
// code comes out inverted, which the cameras of current phones (iOS
// Camera, Google Lens) still read. No colour escape codes are used, so the
// output can also be written to a log file. The error correction level is
// Medium (15%).
//
// Each line has as many runes as the symbol has modules across (4*version +
// 17 + 8); there are half as many lines, rounded up. The last line of an
// odd-sized bitmap draws its upper half only: its lower half is left as
// background, below the quiet zone.
func QR(text string) (string, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", err
	}
	return renderHalfBlocks(q.Bitmap()), nil
}

// renderHalfBlocks draws a bitmap (true = dark module) two rows per line.
func renderHalfBlocks(bits [][]bool) string {
	light := func(y, x int) bool {
		if y >= len(bits) {
			return false // below the bitmap: background
		}
		return !bits[y][x]
	}
	var b strings.Builder
	for y := 0; y < len(bits); y += 2 {
		if y > 0 {
			b.WriteByte('\n')
		}
		for x := range bits[y] {
			top, bottom := light(y, x), light(y+1, x)
			switch {
			case top && bottom:
				b.WriteRune('█')
			case top:
				b.WriteRune('▀')
			case bottom:
				b.WriteRune('▄')
			default:
				b.WriteByte(' ')
			}
		}
	}
	return b.String()
}
