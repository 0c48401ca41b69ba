#!/usr/bin/env python3
"""Regenerates tickets.csv and tickets.jsonl, the sample exports (deterministic)."""
import csv, json, random, os
os.chdir(os.path.dirname(os.path.abspath(__file__)))
random.seed(7)
first = ["Ada","Grace","Alan","Linus","Zoë","José","Mei","Olu","Priya","Sven","Hana","Omar","Lucía","Kofi","Ines","Tariq","Nora","Yuki","Bram","Amara"]
last = ["Lovelace","Hopper","Turing","Torvalds","Müller","Álvarez","Chen","Adeyemi","Natarajan","Lund","Kim","Haddad","Romero","Mensah","Costa","Aziz","Berg","Sato","de Vries","Okafor"]
subjects = ["Refund for order {n}","Where is my parcel?","Cannot log in","Change delivery address","Invoice {n} is wrong","Cancel subscription","Damaged item, order {n}","Question about sizes, fit","Promo code not working","Account locked"]
channels = ["email","chat","sms"]
statuses = ["open","snoozed","done","done"]
ascii = str.maketrans({"ë": "e", "é": "e", "ü": "u", "á": "a", "í": "i", " ": ""})
customers = []
for i in range(20):
    fn, ln = first[i], last[i]
    customers.append({
        "ext": f"C-{1000+i}" if i % 5 != 4 else "",   # every fifth customer has no external id
        "name": f"{fn} {ln}",
        "email": f"{fn.lower().translate(ascii)}.{ln.lower().translate(ascii)}@example.com",
        "phone": f"+1 555 01{i:02d} {random.randint(1000,9999)}" if i % 3 else "",
    })
rows = []
n = 0
for i, c in enumerate(customers):
    for k in range(1 + (i % 4)):   # 1 to 4 conversations each
        n += 1
        rows.append([c["ext"], c["name"], c["email"], c["phone"], f"T-{5000+n}",
                     random.choice(subjects).format(n=70000+n), random.choice(channels), random.choice(statuses)])
rows[3][5] = "Two lines:\nthe parcel came open"           # a quoted field with a newline
rows[7][2] = rows[7][2] + "; alt." + rows[7][2]             # two emails in one field
rows.append(["C-2000", "Customer Only", "customer.only@example.com", "", "", "", "", ""])  # no conversation
bad = [
    ["C-3001", "Bad Email", "not-an-email", "", "T-9001", "Hello", "email", "open"],
    ["C-3002", "Bad Status", "bad.status@example.com", "", "T-9002", "Hello", "email", "pending"],
    ["", "", "", "", "T-9003", "A ticket with no customer at all", "chat", "open"],
    ["C-1000", "Ada Lovelace", "ada.lovelace@example.com", "", rows[0][4], "Repeats an earlier ticket id", "email", "open"],
]
out = rows[:20] + [bad[0]] + rows[20:35] + [bad[1], bad[2]] + rows[35:] + [bad[3]]
with open("tickets.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["customer_external_id","customer_name","email","phone","conversation_id","subject","channel","status"])
    for r in out[:30]:
        w.writerow(r)
    f.write("C-3004,Short Row,short.row@example.com\r\n")   # wrong number of fields
    for r in out[30:]:
        w.writerow(r)

lines = []
m = 0
for i in range(24):
    ext = f"J-{200+i}"
    email = f"user{200+i}@example.org"
    for k in range(1 + (i % 3)):
        m += 1
        subject = random.choice(subjects).format(n=80000+m)
        status = random.choice(statuses)
        if m % 2:   # flat rows with the default column names
            lines.append(json.dumps({"customer_id": ext, "name": f"User {200+i}", "email": email,
                                     "conversation_id": f"J-T-{m}", "subject": subject, "channel": random.choice(channels), "status": status}))
        else:       # rows shaped like the API bodies
            lines.append(json.dumps({"customer": {"externalId": ext, "name": f"User {200+i}", "emails": [{"email": email, "type": "work"}],
                                                  "tags": ["migrated"]},
                                     "conversation": {"externalId": f"J-T-{m}", "name": subject, "channel": random.choice(channels), "status": status, "priority": 1 + m % 5}}))
lines.insert(10, "[\"not\", \"an\", \"object\"]")
lines.insert(20, "{\"customer_id\": \"J-900\", \"email\": \"broken@example.org\", ")
lines.insert(30, json.dumps({"customer_id": "J-901", "email": "j901@example", "subject": "bad email domain"}))
lines.insert(40, json.dumps({"customer_id": "J-902", "email": "j902@example.org", "subject": "x", "status": "closed"}))
lines.append(json.dumps({"customer": {"externalId": "J-950", "name": "No Conversation", "emails": ["only.customer@example.org"]}}))
with open("tickets.jsonl", "w") as f:
    f.write("\n".join(lines) + "\n")

# A help-desk style export: semicolon-separated, Windows-1252, the help desk's own column
# names and statuses (solved, pending, hold, ...), first and last names apart, a second
# email column. helpdesk.mapping.toml maps it.
hd_first = ["Zoë", "José", "Lucía", "Björn", "Hélène", "Ana", "Mårten", "Chloé", "Iñigo", "Renée", "Søren", "Ada"]
hd_last = ["Müller", "Álvarez", "Romero", "Ström", "Dubois", "", "Lind", "Lefèvre", "Ibáñez", "Faure", "Kierkegaard", "Byron"]
hd_status = ["solved", "closed", "pending", "hold", "new", "open", "Solved"]
hd_via = ["email", "web", "phone", "chat"]
hd_priority = ["low", "normal", "high", "urgent", ""]
people = []
for i in range(12):
    mail = f"{hd_first[i].lower().translate(str.maketrans('ëéíøåöñèü', 'eeioaonеu'))}.{i}@example.net"
    mail = "".join(c for c in mail if c.isascii())
    people.append({
        "id": f"R-{300 + i}",
        "first": hd_first[i],
        "last": hd_last[i],
        "email": mail,
        "alt": f"alt{i}@work.example.net" if i % 3 == 0 else "",
        "phone": f"+33 1 42 68 {10 + i:02d} {20 + i:02d}" if i % 2 else "",
    })
hd_rows = []
t = 0
for i, p in enumerate(people):
    for k in range(1 + (i % 4)):
        t += 1
        hd_rows.append([f"HD-{7000 + t}", random.choice(subjects).format(n=90000 + t), random.choice(hd_via),
                        random.choice(hd_status), f"2024-0{1 + t % 9}-1{t % 10}T0{t % 10}:15:00Z",
                        p["id"], p["first"], p["last"], p["email"], p["alt"], p["phone"], random.choice(hd_priority)])
hd_rows[2][4] = "2024-02-11 09:30:00+01:00"                 # a space and an offset: normalised to UTC
hd_rows[5][1] = "Réclamation; colis abîmé"                  # the delimiter inside a quoted field
hd_rows[9][8] = "no-at-sign.example.net"                    # an invalid email
hd_rows[14][3] = "waiting on customer"                     # a status the value map does not know
hd_rows[20][4] = "20/03/2024 10:00"                         # a date that is not RFC 3339
with open("helpdesk.csv", "w", newline="", encoding="windows-1252") as f:
    w = csv.writer(f, delimiter=";", lineterminator="\r\n")
    w.writerow(["Ticket ID", "Subject", "Via", "Ticket Status", "Created At", "Requester ID",
                "Requester First", "Requester Last", "Requester Email", "Requester Alt Email",
                "Requester Phone", "Priority"])
    w.writerows(hd_rows)
