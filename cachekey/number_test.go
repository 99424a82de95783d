package cachekey

import (
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func canonNumber(t *testing.T, s string) string {
	t.Helper()
	out, err := Canonicalize(nil, []byte(s))
	if err != nil {
		t.Fatalf("Canonicalize(%s): %v", s, err)
	}
	return string(out)
}

func TestNumberForms(t *testing.T) {
	tests := []struct {
		want string
		ins  []string
	}{
		{"0", []string{"0", "-0", "0.0", "-0.000", "0e0", "0E+99", "-0e-99", "0.0e99999999999999999999999"}},
		{"1", []string{"1", "1.0", "1e0", "10e-1", "0.1e1", "1.000e+0", "100E-2", "0.001e3", "1e-0", "1e+00"}},
		{"-1", []string{"-1", "-1.0", "-10e-1", "-0.1E1"}},
		{"0.7", []string{"0.7", "0.70", "7e-1", "70e-2", "0.07e1", "7000e-4"}},
		{"12.5", []string{"12.5", "125e-1", "1.25e1", "0.125e2", "12.50000"}},
		{"100", []string{"100", "1e2", "1E+2", "10e1", "100.0", "0.1e3"}},
		{"0.000001", []string{"0.000001", "1e-6", "10e-7"}},
		{"1e-7", []string{"1e-7", "0.0000001", "0.1e-6", "10e-8"}},
		{"-1.5e-7", []string{"-0.00000015", "-1.5e-7", "-15e-8"}},
		{"100000000000000000000", []string{"1e20", "100000000000000000000", "100000000000000000000.0"}},
		{"1e+21", []string{"1e21", "1000000000000000000000", "10e20"}},
		{"123456789012345678901", []string{"123456789012345678901", "1.23456789012345678901e20"}},
		{"1.2345678901234567890123456789e+29", []string{"123456789012345678901234567890", "1.2345678901234567890123456789e29", "12345678901234567890123456789e1", "1.234567890123456789012345678900e+29"}},
		{"9007199254740993", []string{"9007199254740993", "9007199254740993.0"}}, // 2^53+1: not a float64
		{"0.30000000000000004", []string{"0.30000000000000004"}},
		{"1e+99999999999999999999999", []string{"1e99999999999999999999999", "10e99999999999999999999998", "0.1e100000000000000000000000"}},
		{"1e-99999999999999999999999", []string{"1e-99999999999999999999999", "0.1e-99999999999999999999998", "10e-100000000000000000000000"}},
		{"1e+999999999999999999", []string{"1e999999999999999999", "0.1e1000000000000000000"}}, // 18 and 19 exponent digits
		{"1.5e-9223372036854775809", []string{"15e-9223372036854775810", "0.15e-9223372036854775808"}},
		{"1.2e+9223372036854775808", []string{"12e9223372036854775807"}},
		{"1e+308", []string{"1e308"}},
		// Huge exponents: carries and borrows across the 18-digit boundary,
		// and agreement between the int64 and the digit-string paths.
		{"1.2e+1000000000000000000000000", []string{"12e999999999999999999999999", "0.12e1000000000000000000000001", "120e999999999999999999999998"}},
		{"1e+999999999999999998", []string{"1e999999999999999998", "0.01e1000000000000000000", "0.001e1000000000000000001"}},
		{"1e-1000000000000000002", []string{"0.01e-1000000000000000000", "100e-1000000000000000004"}},
		{"1e-999999999999999999", []string{"1e-999999999999999999", "10e-1000000000000000000", "1000e-1000000000000000002"}},
		{"5e+100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000", []string{"50e" + "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"}},
		{"5e-99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999", []string{"0.5e-" + "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999998"}},
		{"1e+400", []string{"1e400"}},
	}
	for _, tc := range tests {
		for _, in := range tc.ins {
			if got := canonNumber(t, in); got != tc.want {
				t.Errorf("Canonicalize(%s) = %s, want %s", in, got, tc.want)
			}
		}
	}
	// Every digit of a big seed survives.
	if got := canonNumber(t, "123456789012345678901234567890"); got != "1.2345678901234567890123456789e+29" {
		t.Errorf("seed: got %s", got)
	}
}

// spell returns a random JSON spelling of ±D × 10^e, D a digit string
// without leading zeros.
func spell(r *rand.Rand, neg bool, d string, e int) string {
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	// Append trailing zeros to the digits, compensating in the exponent.
	z := r.IntN(4)
	d += strings.Repeat("0", z)
	e -= z
	// Move the decimal point f places left (padding with leading zeros).
	f := r.IntN(len(d) + 4)
	var intPart, frac string
	if f >= len(d) {
		intPart, frac = "0", strings.Repeat("0", f-len(d))+d
	} else {
		intPart, frac = d[:len(d)-f], d[len(d)-f:]
	}
	e += f
	if intPart == "" {
		intPart = "0"
	}
	if strings.Trim(intPart, "0") == "" {
		intPart = "0"
	}
	b.WriteString(intPart)
	if frac != "" {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	if e != 0 || r.IntN(3) == 0 {
		b.WriteByte("eE"[r.IntN(2)])
		switch {
		case e < 0:
			b.WriteByte('-')
		case r.IntN(2) == 0:
			b.WriteByte('+')
		}
		b.WriteString(strings.Repeat("0", r.IntN(3)))
		b.WriteString(strconv.Itoa(abs(e)))
	}
	return b.String()
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func randDigits(r *rand.Rand) string {
	n := 1 + r.IntN(30)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + r.IntN(10))
	}
	if r.IntN(4) == 0 {
		b[0] = '0' // zero or a value with fewer digits
	}
	s := strings.TrimLeft(string(b), "0")
	if s == "" {
		return "0"
	}
	return s
}

func bigValue(t *testing.T, s string) *big.Float {
	t.Helper()
	f, _, err := big.ParseFloat(s, 10, 4096, big.ToNearestEven)
	if err != nil {
		t.Fatalf("big.ParseFloat(%s): %v", s, err)
	}
	return f
}

// TestNumbersAgainstBig checks, on random numbers, that two spellings
// canonicalize equally exactly when math/big finds them equal, and that the
// canonical spelling has the same value as the input.
func TestNumbersAgainstBig(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	iters := 20000
	if testing.Short() {
		iters = 2000
	}
	var equal int
	for range iters {
		d1, e1, neg1 := randDigits(r), r.IntN(80)-40, r.IntN(2) == 0
		if r.IntN(2) == 0 {
			e1 = r.IntN(30) - 25 // mostly the positional range
		}
		d2, e2, neg2 := d1, e1, neg1
		switch r.IntN(6) {
		case 0: // same value, maybe different spelling
		case 1:
			d2 = randDigits(r)
		case 2:
			e2 += r.IntN(3) - 1
		case 3:
			neg2 = !neg2
		case 4: // same value with the power of ten moved into the digits
			if d2 != "0" {
				d2 += "0"
				e2--
			}
		case 5: // neighbouring value
			d2 = new(big.Int).Add(bigInt(d1), big.NewInt(int64(r.IntN(3)-1))).String()
			if strings.HasPrefix(d2, "-") {
				d2 = "0"
			}
		}
		a, b := spell(r, neg1, d1, e1), spell(r, neg2, d2, e2)
		ca, cb := canonNumber(t, a), canonNumber(t, b)
		va, vb := bigValue(t, a), bigValue(t, b)
		if (ca == cb) != (va.Cmp(vb) == 0) {
			t.Fatalf("%s -> %s, %s -> %s, big equal %v", a, ca, b, cb, va.Cmp(vb) == 0)
		}
		if ca == cb {
			equal++
		}
		if bigValue(t, ca).Cmp(va) != 0 {
			t.Fatalf("%s -> %s changes the value", a, ca)
		}
		if canonNumber(t, ca) != ca {
			t.Fatalf("%s -> %s not idempotent", a, ca)
		}
	}
	t.Logf("%d of %d pairs equal", equal, iters)
	if equal < iters/10 || equal > iters*9/10 {
		t.Errorf("poor test mix: %d of %d pairs equal", equal, iters)
	}
}

func bigInt(s string) *big.Int {
	v, _ := new(big.Int).SetString(s, 10)
	return v
}
